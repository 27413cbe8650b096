"""Overlay rendering: colour table, sign, percentile clipping, alpha that follows saliency,
real-scale legends, PNG, cache."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from histoxai.dashboard.overlays import (
    Renderer,
    clip_scale,
    colour_bar,
    colour_table,
    legend_labels,
    read_maps,
    resize_nearest,
    rgba,
    shrink,
    to_unit,
)
from histoxai.dashboard.state import CMAPS


@pytest.mark.parametrize("cmap", CMAPS)
def test_colour_tables_have_256_entries(cmap):
    lut = colour_table(cmap)
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    assert not np.array_equal(lut[0], lut[-1])


def test_to_unit_shows_the_chosen_sign():
    v = np.array([-1.0, 0.0, 0.5, np.nan, 4.0])
    np.testing.assert_allclose(to_unit(v, "abs", 2.0), [0.5, 0.0, 0.25, 0.0, 1.0])
    np.testing.assert_allclose(to_unit(v, "pos", 2.0), [0.0, 0.0, 0.25, 0.0, 1.0])
    np.testing.assert_allclose(to_unit(v, "neg", 2.0), [0.5, 0.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(to_unit(v, "signed", 2.0), [0.25, 0.5, 0.625, 0.5, 1.0])
    np.testing.assert_allclose(to_unit(v, "signed", 0.0), 0.5)


def test_percentile_clipping_makes_heavy_tailed_maps_legible():
    # SmoothGrad-like: most pixels small, a few 10x larger (max is ~10x the median).
    rng = np.random.default_rng(0)
    m = rng.lognormal(0.0, 0.9, size=(64, 64)).astype(np.float32)
    visible = lambda clip: (to_unit(m, "abs", clip_scale(np.abs(m), clip)) > 0.25).mean()  # noqa: E731
    assert visible(100.0) < 0.25 and visible(99.0) > 1.5 * visible(100.0)
    assert clip_scale(np.arange(101.0), 100.0) == 100.0 and clip_scale(
        np.arange(101.0), 99.0
    ) == pytest.approx(99.0)


def test_alpha_follows_saliency_so_tissue_stays_visible():
    unit = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    lut = colour_table("viridis")
    assert rgba(unit, lut, "abs", follow=True)[0, :, 3].tolist() == [0, 128, 255]
    assert rgba(unit, lut, "abs", follow=False)[0, :, 3].tolist() == [255, 255, 255]
    signed = rgba(unit, lut, "signed", follow=True)[0, :, 3].tolist()
    assert signed[0] == signed[2] == 255 and signed[1] <= 1  # 0.5 is zero (index 128 of 0..255)
    assert (rgba(unit, lut, "abs", True)[0, :, :3] == lut[[0, 128, 255]]).all()


def test_legend_shows_the_real_scale():
    caption, ticks = legend_labels("abs", "dataset", 99.0, 0.0032)
    assert ticks == ["0", "0.0016", "0.0032"] and "p99" in caption and "variant" in caption
    assert legend_labels("signed", "dataset", 100.0, 2.5)[1] == ["-2.5", "0", "+2.5"]
    assert legend_labels("neg", "image", 99.0, 1.0)[1] == ["0", "-0.5", "-1"]
    caption, ticks = legend_labels("abs", "image", 99.0, None)
    assert "each image" in caption and ticks[-1] == "p99 of each image"


def test_coarse_maps_are_resized_and_large_ones_shrunk():
    assert resize_nearest(np.arange(4.0).reshape(2, 2), (4, 4))[3].tolist() == [2.0, 2.0, 3.0, 3.0]
    big = np.arange(360 * 360, dtype=np.float32).reshape(360, 360)
    small = shrink(big, 224)
    assert small.shape == (180, 180) and small[0, 0] == pytest.approx(big[:2, :2].mean())
    img = np.full((360, 360, 3), 7, np.uint8)
    assert shrink(img, 224).shape == (180, 180, 3) and shrink(img, 224).dtype == np.uint8
    assert shrink(img[:64, :64], 224).shape == (64, 64, 3)


def test_colour_bar_runs_low_to_high():
    bar = colour_bar("gray", width=16, height=2)
    assert bar.shape == (2, 16, 3) and bar[0, 0, 0] < bar[0, -1, 0]


@pytest.mark.parametrize("sign", ["abs", "signed"])
def test_an_overlay_sheet_is_the_rgba_overlays_stacked(catalog, sign):
    r = Renderer(catalog, cache_size=8)
    data = r.overlay_sheet("mdfa", "md", "smoothgrad_s0.2", (3, 5), "magma", "image", sign, 99.0, True)
    img = np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))
    size = catalog.patches.patch_size
    assert img.shape == (2 * size, size, 4)
    store = catalog.sources["mdfa"]
    for i, pid in enumerate((3, 5)):
        raw = read_maps(store, "md", "smoothgrad_s0.2", store.rows([pid]))[0]
        u = to_unit(raw, sign, clip_scale(np.abs(raw), 99.0))
        np.testing.assert_array_equal(
            img[i * size : (i + 1) * size], rgba(u, colour_table("magma"), sign, True)
        )


def test_sheets_are_cached(catalog):
    r = Renderer(catalog, cache_size=8)
    data = r.overlay_sheet("mdfa", "md", "gradcampp", (3,), "viridis", "image", "abs", 99.0, True)
    other = r.overlay_sheet("mdfa", "md", "layercam", (3,), "viridis", "image", "abs", 99.0, True)
    assert other != data
    assert r.overlay_sheet("mdfa", "md", "layercam", (3,), "viridis", "image", "abs", 99.0, True) is other
    assert r.overlay_sheet.cache_info().hits == 1
    assert r.patch_sheet((1, 2)) is r.patch_sheet((1, 2))


def test_dataset_scale_is_the_percentile_over_the_variant(catalog):
    r = Renderer(catalog)
    store = catalog.sources["mdfa"]
    maps = np.abs(read_maps(store, "md", "smoothgrad_s0.1", np.arange(len(store.patch_ids))))
    scale = r.dataset_scale("mdfa", "md", "smoothgrad_s0.1", "abs", 99.0)
    assert scale == pytest.approx(np.percentile(maps, 99.0), rel=1e-5)
    assert r.scale("mdfa", "md", "smoothgrad_s0.1", 0, "image", "abs", 100.0) == pytest.approx(maps[0].max())
    assert r.scale("mdfa", "md", "smoothgrad_s0.1", None, "image", "abs", 99.0) is None


@pytest.mark.parametrize(
    "args",
    [
        ("nope", "md", "gradcampp", 0),
        ("mdfa", "cc", "gradcampp", 0),
        ("mdfa", "md", "nope", 0),
        ("cc", "cc", "gradcampp", 1),  # the cc store explains even ids only
        ("mdfa", "md", "gradcampp", 10_000),
    ],
)
def test_unknown_names_and_patches_raise_key_error(catalog, args):
    *names, pid = args
    with pytest.raises(KeyError):
        Renderer(catalog).overlay_sheet(*names, (0, pid), "viridis", "image", "abs", 99.0, True)
    if pid == 10_000:
        with pytest.raises(KeyError):
            Renderer(catalog).patch_sheet((0, pid))


def test_the_page_and_the_next_are_rendered_in_the_background(catalog):
    from histoxai.dashboard.callbacks import coming_pages
    from histoxai.dashboard.state import parse_view

    view = parse_view("?target=md&variant=layercam&per=24", catalog)
    source, target, variant, pages = coming_pages(catalog, view, "/single")
    assert pages == [list(range(24)), list(range(24, 48))]
    assert coming_pages(catalog, view.replace(page=3), "/single")[3] == [list(range(48, 50))]  # the last
    assert coming_pages(catalog, view, "/methods") is None
    r = Renderer(catalog)
    display = ("viridis", "image", "abs", 99.0, True)
    assert r.warm(source, target, variant, pages, display)
    with r._warming:  # wait for the warm-up to finish
        pass
    assert r.overlay_sheet.cache_info().currsize == 2 and r.patch_sheet.cache_info().currsize == 2
    r.overlay_sheet(source, target, variant, tuple(pages[1]), *display)
    r.patch_sheet(tuple(pages[1]))
    assert r.overlay_sheet.cache_info().hits == 1 and r.patch_sheet.cache_info().hits == 1


def test_a_sheet_being_rendered_is_rendered_once():
    import threading
    import time

    from histoxai.dashboard.overlays import Memo

    calls = []

    def slow(x):
        calls.append(x)
        time.sleep(0.2)
        return x * 2

    memo = Memo(slow, 1)
    out = []
    threads = [threading.Thread(target=lambda: out.append(memo(3))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == [6, 6, 6] and calls == [3]
    assert memo(4) == 8 and memo.cache_info().currsize == 1  # 3 evicted
    assert memo(3) == 6 and calls == [3, 4, 3]


def test_a_failed_render_raises_for_every_caller():
    from histoxai.dashboard.overlays import Memo

    def bad(x):
        raise KeyError(x)

    memo = Memo(bad, 4)
    for _ in range(2):
        with pytest.raises(KeyError):
            memo(1)
    assert memo.cache_info().currsize == 0


@pytest.fixture(scope="module")
def large_pipeline(tmp_path_factory):
    """Patches of 240 px (larger than served: their maps have thumbnails), and a copy of
    the same stores with the thumbnail files removed (a store written before them)."""
    import shutil

    from .conftest import make_pipeline

    root = tmp_path_factory.mktemp("large")
    make_pipeline(root / "a", n_samples=1, grid=2, size=240)
    shutil.copytree(root / "a", root / "b")
    for path in (root / "b" / "data" / "saliency").rglob("*.thumb.npy"):
        path.unlink()
    return root


@pytest.mark.parametrize("sign", ["abs", "pos", "neg", "signed"])
@pytest.mark.parametrize("norm", ["image", "dataset"])
def test_overlays_from_thumbnails_match_the_full_size_maps(large_pipeline, sign, norm):
    from histoxai.dashboard.catalog import load_catalog

    def renderer(copy: str) -> Renderer:
        data = large_pipeline / copy / "data"
        return Renderer(load_catalog(data / "patches", (), data / "saliency"), cache_size=0)

    thumbs, full = renderer("a"), renderer("b")
    assert (large_pipeline / "a/data/saliency/mdfa/maps/md__smoothgrad_s0.2.thumb.npy").is_file()
    for pid in range(len(thumbs.catalog.patches)):
        a = thumbs.overlay_units("mdfa", "md", "smoothgrad_s0.2", [pid], norm, sign, 99.0)[0]
        b = full.overlay_units("mdfa", "md", "smoothgrad_s0.2", [pid], norm, sign, 99.0)[0]
        assert a.shape == b.shape == (120, 120)
        np.testing.assert_allclose(a, b, atol=2e-3)  # float16 planes: well under a colour step
