"""The synthetic H&E phantom: determinism, targets that are exact functions of the drawn
pixels (diffusion tensor, visible cell count), masks and instances, distractors, the
shortcut variant, geometries and the store round trip."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from histoxai.config import PhantomConfig
from histoxai.data.phantom import (
    CC_VISIBLE,
    D_FREE,
    D_NUC,
    D_STROMA,
    K_FIBRE,
    class_means,
    fa_from_tensor,
    generate_phantom,
    nucleus_anisotropy,
    render_px,
    save_montage,
    tensor_fields,
)
from histoxai.data.store import MASK_CLASSES, PatchStore, write_store

NUCLEI, AIR, DISTRACTOR = (MASK_CLASSES.index(c) for c in ("nuclei", "air", "distractor"))
TINY = PhantomConfig(n_samples=2, grid_vox=(4, 4))
SIZE = 32


@pytest.fixture(scope="module")
def phantom():
    return generate_phantom(TINY, SIZE, seed=3)


def pixel_tensor_means(block):
    """(M, Q, R) per patch from the per-pixel tensor of ``FORMULAS['pixel_tensor']``."""
    nuclei, n = block.tables["nuclei"], len(block.table)
    top = int(block.instances.max()) + 1
    k, t = np.zeros((n, top)), np.zeros((n, top))
    k[nuclei["offset"], nuclei["nucleus"]] = nucleus_anisotropy(nuclei["a"], nuclei["b"])
    t[nuclei["offset"], nuclei["nucleus"]] = nuclei["orientation_rad"]
    rows = np.arange(n)[:, None, None]
    fibre = block.table[["fibre_strength", "fibre_angle"]].to_numpy()
    m, q, r = tensor_fields(
        block.masks,
        k[rows, block.instances],
        t[rows, block.instances],
        K_FIBRE * fibre[:, 0, None, None],
        fibre[:, 1, None, None],
    )
    return m.mean((1, 2)), q.mean((1, 2)), r.mean((1, 2))


def test_same_seed_gives_identical_arrays_and_other_seed_differs(phantom):
    blocks, card = phantom
    again, card2 = generate_phantom(TINY, SIZE, seed=3)
    for a, b in zip(blocks, again):
        assert a.images.tobytes() == b.images.tobytes()
        assert a.masks.tobytes() == b.masks.tobytes()
        assert a.instances.tobytes() == b.instances.tobytes()
        assert a.table.equals(b.table)
        assert a.tables["nuclei"].equals(b.tables["nuclei"])
    assert json.dumps(card) == json.dumps(card2)
    other, _ = generate_phantom(TINY, SIZE, seed=4)
    assert not np.array_equal(blocks[0].images, other[0].images)


def test_blocks_have_one_patch_per_voxel_with_masks_and_instances(phantom):
    blocks, _ = phantom
    assert [b.sample for b in blocks] == ["s1", "s2"]
    for block in blocks:
        block.check()
        assert block.images.shape == (16, SIZE, SIZE, 3)
        assert block.masks.shape == block.instances.shape == (16, SIZE, SIZE)
        assert block.instances.dtype == np.int32
        assert block.masks.max() < len(MASK_CLASSES)
        assert ((block.instances > 0) == (block.masks == NUCLEI)).all()
        assert sorted(zip(block.table["row"], block.table["col"])) == [
            (r, c) for r in range(4) for c in range(4)
        ]


def test_nuclei_table_matches_the_instance_masks(phantom):
    for block in phantom[0]:
        nuclei = block.tables["nuclei"]
        assert {"offset", "nucleus", "counted", "area_px", "visible_px", "elongation", "orientation_rad",
                "local_density", "border"} <= set(nuclei.columns)  # fmt: skip
        for offset, rows in nuclei.groupby("offset"):
            inst = block.instances[offset]
            ids = np.unique(inst[inst > 0])
            np.testing.assert_array_equal(np.sort(rows["nucleus"]), ids)
            np.testing.assert_array_equal(rows["nucleus"], np.arange(1, len(ids) + 1))
            visible = np.bincount(inst.ravel(), minlength=len(ids) + 1)[rows["nucleus"]]
            np.testing.assert_allclose(rows["visible_px"], visible)
            edge = np.concatenate([inst[0], inst[-1], inst[:, 0], inst[:, -1]])
            np.testing.assert_array_equal(rows["border"], np.isin(rows["nucleus"], edge))
        assert (nuclei["visible_px"] <= nuclei["area_px"]).all()
        assert (nuclei["elongation"] >= 1).all() and nuclei["orientation_rad"].abs().max() <= np.pi / 2


def test_cc_counts_nuclei_with_more_than_half_their_area_visible(phantom):
    for block in phantom[0]:
        nuclei = block.tables["nuclei"]
        counted = nuclei["visible_px"] > CC_VISIBLE * nuclei["area_px"]
        np.testing.assert_array_equal(nuclei["counted"], counted)
        np.testing.assert_array_equal(
            block.table["cc"], np.bincount(nuclei.loc[counted, "offset"], minlength=len(block.table))
        )
        # a nucleus is counted in at most one patch
        assert not nuclei[counted].duplicated("global_index").any()
        assert block.table["cc"].sum() > 0 and nuclei["border"].any()


def test_md_and_fa_are_the_voxel_mean_of_the_pixel_tensor(phantom):
    for block in phantom[0]:
        t = block.table
        m, q, r = pixel_tensor_means(block)
        np.testing.assert_allclose(t["md_clean"], m, atol=1e-12)
        np.testing.assert_allclose(t["fa_clean"], fa_from_tensor(m, q, r), atol=1e-12)
        np.testing.assert_allclose(t["nuclear_fraction"], (block.masks == NUCLEI).mean(axis=(1, 2)))
        np.testing.assert_allclose(t["air_fraction"], (block.masks == AIR).mean(axis=(1, 2)))
        assert t["fa"].between(0, 1).all() and t["fa_clean"].between(0, 1).all()


def test_pixel_tensor_has_the_documented_physics():
    labels = np.array([[0, 1, 2]])
    m, q, r = tensor_fields(labels, np.full((1, 3), 0.5), np.zeros((1, 3)), 0.0, 0.0)
    np.testing.assert_allclose(m, [[D_STROMA, D_NUC, D_FREE]])
    np.testing.assert_allclose(q, [[0, 0.5 * D_NUC, 0]])  # only the nucleus is anisotropic here
    assert D_NUC < D_STROMA < D_FREE
    assert fa_from_tensor(np.array(1.0), np.array(1.0), np.array(0.0)) == pytest.approx(1.0)
    assert fa_from_tensor(np.array(1.0), np.array(0.0), np.array(0.0)) == 0.0
    # 2-D FA from eigenvalues l1 = 1.5, l2 = 0.5: |l1 - l2| / sqrt(l1^2 + l2^2)
    assert fa_from_tensor(np.array(1.0), np.array(0.3), np.array(0.4)) == pytest.approx(1 / np.sqrt(2.5))


def test_md_lands_in_the_ex_vivo_range_of_micromen():
    blocks, _ = generate_phantom(PhantomConfig(n_samples=6, grid_vox=(5, 5)), 32, seed=0)
    means = [b.table["md"].mean() for b in blocks]
    assert 0.4 <= min(means) and max(means) <= 0.93


def test_noise_has_the_configured_sd():
    cfg = dataclasses.replace(TINY, n_samples=1, grid_vox=(16, 16), noise_sd_md=0.1, noise_sd_fa=0.05)
    (block,), _ = generate_phantom(cfg, 8, seed=0)
    t = block.table
    assert np.std(t["md"] - t["md_clean"]) == pytest.approx(0.1, rel=0.15)
    quiet, _ = generate_phantom(dataclasses.replace(cfg, noise_sd_md=0.0, noise_sd_fa=0.0), 8, seed=0)
    np.testing.assert_array_equal(quiet[0].table["md"], quiet[0].table["md_clean"])


def test_target_smoothing_blurs_the_md_map_only_across_voxels():
    cfg = dataclasses.replace(TINY, n_samples=1, grid_vox=(8, 8), noise_sd_md=0.0)
    (sharp,), _ = generate_phantom(cfg, 16, seed=0)
    (smooth,), _ = generate_phantom(dataclasses.replace(cfg, target_smoothing_vox=1.0), 16, seed=0)
    np.testing.assert_array_equal(sharp.images, smooth.images)
    a, b = sharp.table["md"].to_numpy(), smooth.table["md"].to_numpy()
    assert a.mean() == pytest.approx(b.mean(), rel=0.02) and b.std() < 0.8 * a.std()


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


def test_samples_share_tissue_ranges_in_part_but_differ_in_look(phantom):
    blocks, card = phantom
    s1, s2 = (np.array(class_means(b.images, b.masks)["stroma"]) for b in blocks)
    assert np.abs(s1 - s2).max() > 3
    r1, r2 = card["samples"]["s1"]["ranges"], card["samples"]["s2"]["ranges"]
    for k in r1:
        overlap = min(r1[k][1], r2[k][1]) - max(r1[k][0], r2[k][0])
        assert overlap >= (2 * TINY.tissue_overlap - 1) * (r1[k][1] - r1[k][0]) - 1e-3
    assert card["samples"]["s1"]["colours_rgb"] != card["samples"]["s2"]["colours_rgb"]


def test_full_overlap_gives_every_sample_the_same_tissue_ranges():
    _, card = generate_phantom(dataclasses.replace(TINY, tissue_overlap=1.0), SIZE, seed=0)
    assert card["samples"]["s1"]["ranges"] == card["samples"]["s2"]["ranges"]


def test_distractors_follow_their_density_and_never_change_targets(phantom):
    blocks, _ = phantom
    off, _ = generate_phantom(dataclasses.replace(TINY, distractors=False), SIZE, seed=3)
    dense, _ = generate_phantom(dataclasses.replace(TINY, distractor_density=0.3), SIZE, seed=3)
    share = [sum((b.masks == DISTRACTOR).mean() for b in bs) for bs in (off, blocks, dense)]
    assert share[0] == 0 < share[1] < share[2]
    targets = ["md", "fa", "cc", "md_clean", "fa_clean", "nuclear_fraction", "air_fraction"]
    for on_block, off_block, dense_block in zip(blocks, off, dense):
        assert on_block.table[targets].equals(off_block.table[targets])
        assert dense_block.table[targets].equals(off_block.table[targets])
        np.testing.assert_array_equal(on_block.instances, off_block.instances)
        assert not np.array_equal(on_block.images, off_block.images)


def test_default_distractor_density_gives_the_distractor_metric_power():
    cfg = PhantomConfig(n_samples=2, grid_vox=(8, 8))
    blocks, card = generate_phantom(cfg, 64, seed=0)
    share = np.concatenate([b.table["distractor_fraction"] for b in blocks])
    assert (share >= 0.03).mean() >= 0.9
    assert card["distractor_area"]["share_of_patches_ge_3pct"] == pytest.approx((share >= 0.03).mean())


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
def test_any_patch_size_and_grid_work_and_targets_do_not_depend_on_it(size):
    cfg = dataclasses.replace(TINY, n_samples=1, grid_vox=(2, 3))
    (block,), card = generate_phantom(cfg, size, seed=0)
    assert block.images.shape == (6, size, size, 3) and block.masks.shape == (6, size, size)
    assert card["voxel_um"] == pytest.approx(64.0) and card["um_per_px"] == pytest.approx(64.0 / size)


def test_micromen_geometry_renders_200um_voxels_and_resizes_to_the_patch():
    assert render_px(PhantomConfig(geometry="micromen"), 128) == (128, 200 / 128)
    assert render_px(PhantomConfig(geometry="micromen", um_per_px=0.5), 128) == (400, 0.5)
    cfg = PhantomConfig(n_samples=1, grid_vox=(2, 2), geometry="micromen", um_per_px=2.0)
    (block,), card = generate_phantom(cfg, 64, seed=0)
    assert (
        card["voxel_um"] == 200 and card["render_px"] == 100 and card["um_per_px"] == pytest.approx(200 / 64)
    )
    assert block.images.shape == (4, 64, 64, 3) and block.instances.shape == (4, 64, 64)
    assert block.table["cc"].min() > 50  # meningioma density over 200 um voxels
    nuclei = block.tables["nuclei"]
    assert nuclei["area_px"].median() == pytest.approx(np.pi * 4.0**2 / (200 / 64) ** 2, rel=0.5)


def test_card_is_json_with_three_reference_r2_per_target(phantom):
    _, card = phantom
    text = json.dumps(card)
    assert json.loads(text)["source"] == "phantom"
    assert set(card["ceilings"]) == {"md", "fa", "cc"} and card["ceilings"]["cc"] == 1.0
    assert all(0 < v <= 1 for v in card["ceilings"].values())
    assert card["oracle_ceilings"] == {"md": None, "fa": None, "cc": None}  # too few patches
    assert set(card["sample_mean_baseline"]) == {"md", "fa", "cc"}
    assert {"pixel_tensor", "md_clean", "fa_clean", "cc"} <= set(card["formulas"])
    assert set(card["per_sample_shift"]) == {"s1", "s2"}
    assert card["params"]["grid_vox"] == [4, 4] and card["noise_sd"]["md"] == TINY.noise_sd_md


def test_image_oracle_ceiling_is_high_but_below_the_noise_ceiling():
    blocks, card = generate_phantom(PhantomConfig(n_samples=3, grid_vox=(7, 7)), 64, seed=0)
    oracle, noise = card["oracle_ceilings"], card["ceilings"]
    assert oracle["md"] > 0.8 and oracle["cc"] > 0.8 and oracle["fa"] > 0.3
    assert all(oracle[t] <= noise[t] + 0.02 for t in oracle)
    assert all(card["sample_mean_baseline"][t] < oracle[t] for t in oracle)


def test_store_round_trip_with_instances(phantom, tmp_path):
    blocks, card = phantom
    store = write_store(tmp_path / "patches", blocks, card)
    reopened = PatchStore(store.root)
    assert reopened.card["source"] == "phantom" and reopened.card["ceilings"] == card["ceilings"]
    assert set(reopened.targets) == {"md", "fa", "cc"} and reopened.has_instances
    ids = reopened.ids(samples=["s2"])
    np.testing.assert_array_equal(reopened.images(ids), blocks[1].images)
    np.testing.assert_array_equal(reopened.masks(ids), blocks[1].masks)
    np.testing.assert_array_equal(reopened.instances(ids), blocks[1].instances)
    assert isinstance(reopened._instances["s2"], np.memmap)
    nuclei = reopened.table("nuclei")
    assert len(nuclei) == sum(len(b.tables["nuclei"]) for b in blocks)
    counts = np.bincount(nuclei.loc[nuclei["counted"], "patch_id"], minlength=len(reopened))
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


def test_rendering_by_rows_equals_rendering_the_whole_canvas_at_once():
    from histoxai.data import phantom_draw as draw
    from histoxai.data.phantom import render_rows, sample_scene
    from histoxai.data.phantom_scene import compose, render_window

    cfg = dataclasses.replace(TINY, grid_vox=(5, 3))
    scenes = [sample_scene(cfg, SIZE, 0, i) for i in range(6)]
    assert any(s.blur_px >= 0.25 for s in scenes) and any(s.blur_px < 0.25 for s in scenes)
    for scene in scenes:
        canvas = compose(scene, (0, scene.shape[0], 0, scene.shape[1]))
        whole = [
            draw.cut_patches(x, SIZE)
            for x in (render_window(scene, canvas, (0, 0)), canvas.labels, canvas.gid)
        ]
        for by_rows, at_once in zip(render_rows(scene), whole):
            assert by_rows.dtype == at_once.dtype
            np.testing.assert_array_equal(by_rows, at_once)
