"""Image routes serve only patches of the loaded stores."""

from __future__ import annotations

import pytest

from histoxai.config import DashboardConfig
from histoxai.dashboard.app import create_app
from histoxai.dashboard.routes import MAX_SHEET, legend_base, overlay_base, patch_src, with_query
from histoxai.dashboard.state import View, display_query


@pytest.fixture(scope="module")
def client(pipeline, catalog):
    return create_app(DashboardConfig(), pipeline["patches"], catalog=catalog).server.test_client()


def test_overlay_and_legend_are_pngs_and_patches_jpegs(client):
    view = View(cmap="magma", norm="dataset", sign="signed", clip=99.9)
    for url, magic in (
        (with_query(overlay_base("mdfa", "md", "smoothgrad_s0.2", (4,)), display_query(view)), b"\x89PNG"),
        (patch_src((4,)), b"\xff\xd8\xff"),
        (
            with_query(
                legend_base("mdfa", "md", "smoothgrad_s0.2"), "cmap=RdBu_r&norm=dataset&sign=signed&clip=99"
            ),
            b"\x89PNG",
        ),
        (with_query(legend_base("mdfa", "md", "gradcampp", 4), "cmap=viridis"), b"\x89PNG"),
    ):
        resp = client.get(url)
        assert resp.status_code == 200, url
        assert resp.data[:3] == magic[:3] and resp.mimetype in ("image/png", "image/jpeg")


def test_a_sheet_stacks_its_tiles_top_to_bottom(client):
    import io

    import numpy as np
    from PIL import Image

    def pixels(url):
        return np.asarray(Image.open(io.BytesIO(client.get(url).data)).convert("RGBA"), dtype=np.int16)

    query = display_query(View())
    sheet = pixels(with_query(overlay_base("mdfa", "md", "gradcampp", (4, 7, 9)), query))
    size = sheet.shape[1]
    assert sheet.shape[0] == 3 * size
    for i, pid in enumerate((4, 7, 9)):
        one = pixels(with_query(overlay_base("mdfa", "md", "gradcampp", (pid,)), query))
        np.testing.assert_array_equal(sheet[i * size : (i + 1) * size], one)
    patches = pixels(patch_src((4, 7, 9)))
    assert patches.shape[0] == 3 * size
    # JPEG at quality 95: each row is its own patch within a few grey levels
    for i, pid in enumerate((4, 7, 9)):
        assert np.abs(patches[i * size : (i + 1) * size] - pixels(patch_src((pid,)))).mean() < 3


@pytest.mark.parametrize(
    "url",
    [
        "/img/overlay/mdfa/md/gradcampp.png?ids=99999",
        "/img/overlay/mdfa/md/gradcampp.png?ids=4,99999",
        "/img/overlay/mdfa/md/..%2F..%2Fmanifest.json.png?ids=1",
        "/img/overlay/..%2Fmdfa/md/gradcampp.png?ids=1",
        "/img/overlay/cc/cc/gradcampp.png?ids=1",
        "/img/patch/../index.parquet",
        "/img/patch.jpg?ids=99999",
        "/img/patch.jpg?ids=1,99999",
        "/img/legend/mdfa/md/nope.png",
        "/img/legend/mdfa/md/gradcampp.png?pid=99999",
        "/img/colourbar/..%2Fsecret.png",
    ],
)
def test_unknown_names_and_ids_are_404(client, url):
    assert client.get(url).status_code == 404


@pytest.mark.parametrize("query", ["cmap=evil", "clip=abc", "clip=42", "norm=../x", "sign=up", "fa=2"])
def test_bad_display_parameters_are_400(client, query):
    assert client.get(f"/img/overlay/mdfa/md/gradcampp.png?ids=1&{query}").status_code == 400
    assert client.get(f"/img/legend/mdfa/md/gradcampp.png?{query}").status_code == 400


@pytest.mark.parametrize(
    "ids", ["", "1,,2", "-1", "1.5", "a", "1;2", "9" * 12, ",".join(["1"] * (MAX_SHEET + 1))]
)
def test_bad_sheet_ids_are_400(client, ids):
    for url in ("/img/patch.jpg", "/img/overlay/mdfa/md/gradcampp.png", "/img/mask.png"):
        assert client.get(f"{url}?ids={ids}&cls=nuclei").status_code == 400, (url, ids)


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


def test_report_charts_are_served_by_position_only(client, catalog):
    assert [p.name for p in catalog.figures["mdfa"]] == ["shares_md.png"]
    assert client.get("/img/report/mdfa/0.png").data[:4] == b"\x89PNG"
    for url in ("/img/report/mdfa/1.png", "/img/report/nope/0.png", "/img/report/..%2F..%2Fetc/0.png"):
        assert client.get(url).status_code == 404
