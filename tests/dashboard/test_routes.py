"""Image routes serve only patches of the loaded stores."""

from __future__ import annotations

import pytest

from dashboard.app import create_app
from dashboard.routes import legend_base, overlay_src, with_query
from dashboard.state import View
from histoxai.config import DashboardConfig


@pytest.fixture(scope="module")
def client(pipeline, catalog):
    return create_app(DashboardConfig(), pipeline["patches"], catalog=catalog).server.test_client()


def test_overlay_patch_and_legend_are_pngs(client):
    view = View(cmap="magma", norm="dataset", sign="signed", clip=99.9)
    for url in (
        overlay_src("mdfa", "md", "smoothgrad_s0.2", 4, view),
        "/img/patch/4.png",
        with_query(
            legend_base("mdfa", "md", "smoothgrad_s0.2"), "cmap=RdBu_r&norm=dataset&sign=signed&clip=99"
        ),
        with_query(legend_base("mdfa", "md", "gradcampp", 4), "cmap=viridis"),
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
        "/img/legend/mdfa/md/nope.png",
        "/img/legend/mdfa/md/gradcampp.png?pid=99999",
        "/img/colourbar/..%2Fsecret.png",
    ],
)
def test_unknown_names_and_ids_are_404(client, url):
    assert client.get(url).status_code == 404


@pytest.mark.parametrize("query", ["cmap=evil", "clip=abc", "clip=42", "norm=../x", "sign=up", "fa=2"])
def test_bad_display_parameters_are_400(client, query):
    assert client.get(f"/img/overlay/mdfa/md/gradcampp/1.png?{query}").status_code == 400
    assert client.get(f"/img/legend/mdfa/md/gradcampp.png?{query}").status_code == 400


def test_exports_are_the_filtered_table_and_a_figure(client, catalog):
    import io

    import pandas as pd

    resp = client.get("/export/table.csv?target=fa&variant=layercam&split=val&sort=absdelta&desc=1")
    table = pd.read_csv(io.BytesIO(resp.data))
    fa = catalog.tables["fa"]
    assert len(table) == int((fa.split == 1).sum()) and set(table["split"]) == {"val"}
    assert (table["delta"].abs().diff().dropna() <= 0).all()
    assert "attachment" in resp.headers["Content-Disposition"]
    for page, fmt, magic in (
        ("single", "png", b"\x89PNG"),
        ("methods", "pdf", b"%PDF-"),
        ("targets", "png", b"\x89PNG"),
    ):
        resp = client.get(f"/export/{page}.{fmt}?target=md&variant=gradcampp&per=24&cmap=magma&sign=signed")
        assert resp.status_code == 200 and resp.data[: len(magic)] == magic
    assert client.get("/export/main.png").status_code == 404
    assert client.get("/export/single.svg").status_code == 404
