"""The synthetic H&E phantom: determinism, targets that match what is drawn, masks,
distractors, shortcut variant and the store round trip."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from histoxai.config import PhantomConfig
from histoxai.data.phantom import (
    class_means,
    fa_from_order,
    generate_phantom,
    md_from_fractions,
    nuclei_stats,
    save_montage,
)
from histoxai.data.store import MASK_CLASSES, PatchStore, write_store

NUCLEI, AIR, DISTRACTOR = (MASK_CLASSES.index(c) for c in ("nuclei", "air", "distractor"))
TINY = PhantomConfig(n_samples=2, grid_vox=(4, 4))
SIZE = 32


@pytest.fixture(scope="module")
def phantom():
    return generate_phantom(TINY, SIZE, seed=3)


def test_same_seed_gives_identical_arrays_and_other_seed_differs(phantom):
    blocks, card = phantom
    again, card2 = generate_phantom(TINY, SIZE, seed=3)
    for a, b in zip(blocks, again):
        assert a.images.tobytes() == b.images.tobytes()
        assert a.masks.tobytes() == b.masks.tobytes()
        assert a.table.equals(b.table)
        assert a.tables["nuclei"].equals(b.tables["nuclei"])
    assert json.dumps(card) == json.dumps(card2)
    other, _ = generate_phantom(TINY, SIZE, seed=4)
    assert not np.array_equal(blocks[0].images, other[0].images)


def test_blocks_have_one_patch_per_voxel_with_masks(phantom):
    blocks, _ = phantom
    assert [b.sample for b in blocks] == ["s1", "s2"]
    for block in blocks:
        block.check()
        assert block.images.shape == (16, SIZE, SIZE, 3)
        assert block.masks.shape == (16, SIZE, SIZE)
        assert block.masks.max() < len(MASK_CLASSES)
        assert sorted(zip(block.table["row"], block.table["col"])) == [
            (r, c) for r in range(4) for c in range(4)
        ]


def test_cc_counts_recorded_nuclei_centres_in_each_patch(phantom):
    for block in phantom[0]:
        nuclei = block.tables["nuclei"]
        assert set(nuclei.columns) >= {"offset", "cx", "cy", "a", "b", "angle"}
        assert nuclei[["cx", "cy"]].to_numpy().min() >= 0
        assert nuclei[["cx", "cy"]].to_numpy().max() < SIZE
        counts = np.bincount(nuclei["offset"], minlength=len(block.table))
        np.testing.assert_array_equal(block.table["cc"].to_numpy(), counts)
        assert block.table["cc"].sum() > 0
        assert (nuclei["a"] >= nuclei["b"]).all() and (nuclei["b"] > 0).all()


def test_every_recorded_nucleus_is_drawn_at_its_centre(phantom):
    for block in phantom[0]:
        n = block.tables["nuclei"]
        at_centre = block.masks[n["offset"], n["cy"].astype(int), n["cx"].astype(int)]
        assert (at_centre == NUCLEI).all()


def test_mask_classes_are_present_and_nuclei_are_dark_haematoxylin(phantom):
    blocks, _ = phantom
    labels = np.concatenate([b.masks.ravel() for b in blocks])
    assert set(np.unique(labels)) == set(range(len(MASK_CLASSES)))
    for block in blocks:
        means = class_means(block.images, block.masks)
        nuclei, stroma, air = (np.array(means[c]) for c in ("nuclei", "stroma", "air"))
        assert nuclei.sum() < stroma.sum() - 100  # clearly darker
        assert nuclei[2] > nuclei[1]  # purple-blue: blue above green
        assert stroma[0] > stroma[1]  # pink: red above green
        assert air.min() > 200  # white


def test_targets_are_the_documented_functions_of_the_drawn_patch(phantom):
    for block in phantom[0]:
        t = block.table
        np.testing.assert_allclose(t["nuclear_fraction"], (block.masks == NUCLEI).mean(axis=(1, 2)))
        np.testing.assert_allclose(t["air_fraction"], (block.masks == AIR).mean(axis=(1, 2)))
        np.testing.assert_allclose(t["md_clean"], md_from_fractions(t["nuclear_fraction"], t["air_fraction"]))
        stats = nuclei_stats(block.tables["nuclei"], len(t))
        for name, values in stats.items():
            np.testing.assert_allclose(t[name], values, atol=1e-12)
        np.testing.assert_allclose(t["fa_clean"], fa_from_order(t["order"], t["air_fraction"]))
        assert t["md"].between(0.1, 2.6).all() and t["fa"].between(0, 1).all()
        assert t["fa_clean"].between(0, 1).all() and t["coherence"].between(0, 1 + 1e-9).all()
        assert (t["elongation"] >= 1).all()


def test_noise_has_the_configured_sd():
    cfg = dataclasses.replace(TINY, n_samples=1, grid_vox=(16, 16), noise_sd_md=0.1, noise_sd_fa=0.05)
    (block,), _ = generate_phantom(cfg, 8, seed=0)
    t = block.table
    assert np.std(t["md"] - t["md_clean"]) == pytest.approx(0.1, rel=0.15)
    assert np.std(t["fa"] - t["fa_clean"]) == pytest.approx(0.05, rel=0.15)
    quiet, _ = generate_phantom(dataclasses.replace(cfg, noise_sd_md=0.0, noise_sd_fa=0.0), 8, seed=0)
    np.testing.assert_array_equal(quiet[0].table["md"], quiet[0].table["md_clean"])


def test_md_falls_with_nuclei_and_rises_with_air_and_fa_rises_with_order():
    assert md_from_fractions(0.4, 0.1) < md_from_fractions(0.1, 0.1) < md_from_fractions(0.1, 0.5)
    assert md_from_fractions(0.0, 1.0) == pytest.approx(2.4)
    assert fa_from_order(0.5, 0.0) > fa_from_order(0.1, 0.0) > fa_from_order(0.1, 0.8)


def test_samples_differ_in_stain_and_parameter_ranges(phantom):
    blocks, card = phantom
    s1, s2 = (np.array(class_means(b.images, b.masks)["stroma"]) for b in blocks)
    assert np.abs(s1 - s2).max() > 3
    assert card["samples"]["s1"]["ranges"] != card["samples"]["s2"]["ranges"]
    assert card["samples"]["s1"]["colours_rgb"] != card["samples"]["s2"]["colours_rgb"]


def test_distractors_are_drawn_only_when_enabled_and_never_change_targets(phantom):
    blocks, _ = phantom
    off, _ = generate_phantom(dataclasses.replace(TINY, distractors=False), SIZE, seed=3)
    assert sum((b.masks == DISTRACTOR).sum() for b in blocks) > 0
    assert all((b.masks != DISTRACTOR).all() for b in off)
    targets = ["md", "fa", "cc", "md_clean", "fa_clean", "nuclear_fraction", "air_fraction"]
    for on_block, off_block in zip(blocks, off):
        assert on_block.table[targets].equals(off_block.table[targets])
        assert not np.array_equal(on_block.images, off_block.images)


def test_shortcut_darkens_the_border_by_an_md_correlated_cue(phantom):
    blocks, card = phantom
    cut, cut_card = generate_phantom(dataclasses.replace(TINY, shortcut=True), SIZE, seed=3)
    assert card["shortcut"] == "off" and "shortcut_cue" in cut_card["shortcut"]
    for plain, marked in zip(blocks, cut):
        cue = marked.table["shortcut_cue"].to_numpy()
        assert (plain.table["shortcut_cue"] == 0).all()
        assert np.corrcoef(cue, marked.table["md"])[0, 1] > 0.99
        np.testing.assert_array_equal(plain.masks, marked.masks)
        np.testing.assert_array_equal(plain.images[:, 1:-1, 1:-1], marked.images[:, 1:-1, 1:-1])
        border = (
            plain.images[:, 0].astype(float).mean((1, 2)),
            marked.images[:, 0].astype(float).mean((1, 2)),
        )
        np.testing.assert_allclose(border[1] / border[0], 1 - cue, atol=0.02)


@pytest.mark.parametrize("size", [32, 48])
def test_any_patch_size_and_grid_work(size):
    cfg = dataclasses.replace(TINY, n_samples=1, grid_vox=(2, 3))
    (block,), _ = generate_phantom(cfg, size, seed=0)
    assert block.images.shape == (6, size, size, 3) and block.masks.shape == (6, size, size)
    assert block.tables["nuclei"][["cx", "cy"]].to_numpy().max() < size


def test_card_is_json_with_ceilings_formulas_and_params(phantom):
    _, card = phantom
    text = json.dumps(card)
    assert json.loads(text)["source"] == "phantom"
    assert set(card["ceilings"]) == {"md", "fa", "cc"} and card["ceilings"]["cc"] == 1.0
    assert all(0 < v <= 1 for v in card["ceilings"].values())
    assert {"md", "fa", "cc", "md_clean", "fa_clean"} <= set(card["formulas"])
    assert card["params"]["grid_vox"] == [4, 4] and card["noise_sd"]["md"] == TINY.noise_sd_md


def test_store_round_trip(phantom, tmp_path):
    blocks, card = phantom
    store = write_store(tmp_path / "patches", blocks, card)
    reopened = PatchStore(store.root)
    assert reopened.card["source"] == "phantom" and reopened.card["ceilings"] == card["ceilings"]
    assert set(reopened.targets) == {"md", "fa", "cc"}
    ids = reopened.ids(samples=["s2"])
    np.testing.assert_array_equal(reopened.images(ids), blocks[1].images)
    np.testing.assert_array_equal(reopened.masks(ids), blocks[1].masks)
    nuclei = reopened.table("nuclei")
    assert len(nuclei) == sum(len(b.tables["nuclei"]) for b in blocks)
    counts = np.bincount(nuclei["patch_id"], minlength=len(reopened))
    np.testing.assert_array_equal(counts, reopened.index["cc"].to_numpy())


def test_montage_is_a_png_with_one_row_per_sample(phantom, tmp_path):
    from PIL import Image

    path = save_montage(phantom[0], tmp_path / "montage.png", per_sample=3, scale=1)
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (3 * 2 * (SIZE + 4), 2 * (SIZE + 4))


def test_tiny_patch_size_is_rejected():
    with pytest.raises(ValueError, match="patch_size_px=2"):
        generate_phantom(TINY, 2, seed=0)
