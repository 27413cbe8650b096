"""Image routes serve only patches of the loaded stores."""

from __future__ import annotations

import pytest

from dashboard.app import Settings, create_app
from dashboard.routes import overlay_src


@pytest.fixture(scope="module")
def client(pipeline, catalog):
    return create_app(Settings(pipeline["patches"]), catalog=catalog).server.test_client()


def test_overlay_patch_and_colour_bar_are_pngs(client):
    for url in (
        overlay_src("mdfa", "md", "smoothgrad_s0.2", 4, "magma", 0.4, "dataset"),
        "/img/patch/4.png",
        "/img/colourbar/RdBu_r.png",
    ):
        resp = client.get(url)
        assert resp.status_code == 200, url
        assert resp.mimetype == "image/png" and resp.data[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "url",
    [
        "/img/overlay/mdfa/md/gradcampp/99999.png",
        "/img/overlay/mdfa/md/..%2F..%2Fmanifest.json/1.png",
        "/img/overlay/mdfa/md/gradcampp/-1.png",
        "/img/overlay/..%2Fmdfa/md/gradcampp/1.png",
        "/img/overlay/cc/cc/gradcampp/1.png",
        "/img/patch/../index.parquet",
        "/img/patch/99999.png",
        "/img/colourbar/..%2Fsecret.png",
    ],
)
def test_unknown_names_and_ids_are_404(client, url):
    assert client.get(url).status_code == 404


@pytest.mark.parametrize("query", ["cmap=evil", "alpha=abc", "alpha=101", "norm=../x"])
def test_bad_display_parameters_are_400(client, query):
    assert client.get(f"/img/overlay/mdfa/md/gradcampp/1.png?{query}").status_code == 400
