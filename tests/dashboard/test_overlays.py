"""Overlay rendering: colour table, blending, normalisation, PNG, cache."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from dashboard.overlays import Renderer, blend, colour_bar, colour_table, resize_nearest, to_unit
from dashboard.state import CMAPS


@pytest.mark.parametrize("cmap", CMAPS)
def test_colour_tables_have_256_entries(cmap):
    lut = colour_table(cmap)
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    assert not np.array_equal(lut[0], lut[-1])


def test_blend_is_the_image_at_alpha_0_and_the_colours_at_alpha_1():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    unit = rng.random((8, 8)).astype(np.float32)
    lut = colour_table("viridis")
    np.testing.assert_array_equal(blend(image, unit, lut, 0.0), image)
    np.testing.assert_array_equal(blend(image, unit, lut, 1.0), lut[(unit * 255 + 0.5).astype(np.uint8)])
    half = blend(image, unit, lut, 0.5).astype(int)
    expected = (image.astype(int) + lut[(unit * 255 + 0.5).astype(np.uint8)]) / 2
    assert np.abs(half - expected).max() <= 1


def test_to_unit_shows_magnitude_or_sign():
    v = np.array([-1.0, 0.0, 0.5, np.nan])
    np.testing.assert_allclose(to_unit(v, signed=False), [1.0, 0.0, 0.5, 0.0])
    np.testing.assert_allclose(to_unit(v, signed=True), [0.0, 0.5, 0.75, 0.5])


def test_coarse_maps_are_resized_to_the_patch():
    assert resize_nearest(np.arange(4.0).reshape(2, 2), (4, 4))[3].tolist() == [2.0, 2.0, 3.0, 3.0]


def test_colour_bar_runs_low_to_high():
    bar = colour_bar("gray", width=16, height=2)
    assert bar.shape == (2, 16, 3) and bar[0, 0, 0] < bar[0, -1, 0]


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_overlay_png_matches_the_patch_and_is_cached(catalog):
    r = Renderer(catalog, cache_size=8)
    data = r.overlay_png("mdfa", "md", "gradcampp", 3, "viridis", 0, "image")
    np.testing.assert_array_equal(_png(data), catalog.patches.images([3])[0])  # alpha 0: the patch itself
    other = r.overlay_png("mdfa", "md", "layercam", 3, "viridis", 60, "image")
    assert other != data
    assert r.overlay_png("mdfa", "md", "layercam", 3, "viridis", 60, "image") is other
    assert r.overlay_png.cache_info().hits == 1


def test_normalisations_differ_and_dataset_scale_is_a_high_percentile(catalog):
    r = Renderer(catalog)
    maps = np.abs(catalog.sources["mdfa"].read("md", "smoothgrad_s0.1"))
    scale = r.dataset_scale("mdfa", "md", "smoothgrad_s0.1")
    assert np.percentile(maps, 90) < scale <= maps.max()
    image = r.display_map("mdfa", "md", "smoothgrad_s0.1", 0, "image")
    assert np.abs(image).max() == pytest.approx(1.0)
    raw = r.display_map("mdfa", "md", "smoothgrad_s0.1", 0, "none")
    np.testing.assert_allclose(raw, catalog.sources["mdfa"].read("md", "smoothgrad_s0.1", [0])[0])


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
    with pytest.raises(KeyError):
        Renderer(catalog).overlay_png(*args, "viridis", 50, "image")
