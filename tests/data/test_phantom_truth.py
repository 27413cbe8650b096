"""Ground truth of the phantom: signed per-pixel influence and in-distribution ablations."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from histoxai.config import PhantomConfig
from histoxai.data import phantom as ph
from histoxai.data.phantom import generate_phantom
from histoxai.data.phantom_truth import ablate, original_patch, signed_truth
from histoxai.data.store import MASK_CLASSES, PatchStore, write_store

NUCLEI, AIR, DISTRACTOR = (MASK_CLASSES.index(c) for c in ("nuclei", "air", "distractor"))
CFG = PhantomConfig(n_samples=2, grid_vox=(3, 3), distractor_density=0.2)
SIZE = 48


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> PatchStore:
    blocks, card = generate_phantom(CFG, SIZE, seed=5)
    return write_store(tmp_path_factory.mktemp("truth") / "patches", blocks, card)


def truth(store: PatchStore, target: str, ids: np.ndarray) -> np.ndarray:
    nuclei = store.table("nuclei")
    return signed_truth(
        target, store.masks(ids), store.instances(ids), nuclei, store.index.iloc[ids].reset_index(drop=True)
    )


def test_signed_truth_adds_up_to_the_target_change_and_has_the_physical_signs(store):
    ids = np.arange(len(store))
    masks = store.masks(ids)
    md = truth(store, "md", ids)
    plain = store.index["md_clean"].to_numpy() - md.sum(axis=(1, 2))
    np.testing.assert_allclose(plain, ph.D_STROMA, atol=1e-5)  # every pixel plain stroma: MD = D_STROMA
    assert (md[masks == NUCLEI] < 0).all() and (md[masks == AIR] > 0).all()
    assert (md[masks == DISTRACTOR] == 0).all() and (md[masks == 0] == 0).all()
    cc = truth(store, "cc", ids)
    np.testing.assert_allclose(cc.sum(axis=(1, 2)), store.index["cc"], atol=1e-4)
    assert (cc[masks != NUCLEI] == 0).all() and (cc >= 0).all()
    fa = truth(store, "fa", ids)
    assert np.isfinite(fa).all() and (fa[masks == AIR] <= 1e-7).all()  # free water only dilutes anisotropy
    assert (fa[masks == DISTRACTOR] != 0).any()  # distractors sit on fibrous stroma, which carries FA


def test_signed_truth_for_cc_without_index_rows_and_bad_calls(store):
    ids = np.unique(store.table("nuclei")["patch_id"])
    np.testing.assert_allclose(
        signed_truth("cc", store.masks(ids), store.instances(ids), store.table("nuclei")).sum(axis=(1, 2)),
        store.index["cc"].to_numpy()[ids],
        atol=1e-4,
    )
    with pytest.raises(ValueError, match="patches"):
        signed_truth("md", store.masks(ids), store.instances(ids), store.table("nuclei"))
    with pytest.raises(ValueError, match="target 'x'"):
        signed_truth("x", store.masks(ids), store.instances(ids), store.table("nuclei"))


def test_re_rendering_with_nothing_removed_gives_the_stored_patch(store):
    for pid in (0, 4, 13):
        np.testing.assert_array_equal(original_patch(store.root, pid), store.images([pid])[0])


def test_ablating_a_counted_nucleus_lowers_cc_by_one_and_changes_md_by_its_pixels(store):
    nuclei = store.table("nuclei")
    pid = int(store.index["cc"].idxmax())
    records = list(ablate(store.root, [pid], kinds=["nucleus"]))
    rows = nuclei[nuclei["patch_id"] == pid].set_index("nucleus")
    inst = store.instances([pid])[0]
    image = store.images([pid])[0]
    checked = 0
    for rec in records:
        assert rec.kind == "nucleus" and rec.object_mask.sum() == rows.loc[rec.object_id, "visible_px"]
        np.testing.assert_array_equal(rec.object_mask, inst == rec.object_id)
        # its pixels turn into stroma, air or a hidden nucleus: MD rises by at most stroma's share
        assert 0 <= rec.delta["md"] <= rec.object_mask.sum() * (ph.D_FREE - ph.D_NUC) / SIZE**2 + 1e-12
        far = ~ndimage_dilate(rec.object_mask, 6)
        np.testing.assert_array_equal(rec.image[far], image[far])
        # an isolated counted nucleus (no other nucleus within 3 px): cc falls by exactly 1
        isolated = not (ndimage_dilate(rec.object_mask, 3) & (inst > 0) & (inst != rec.object_id)).any()
        if rows.loc[rec.object_id, "counted"] and isolated:
            assert rec.delta["cc"] == -1
            checked += 1
        if not rows.loc[rec.object_id, "counted"] and isolated:
            assert rec.delta["cc"] == 0
    assert checked >= 1


def test_removing_a_distractor_changes_no_target_but_the_image(store):
    pids = np.flatnonzero(store.index["distractor_fraction"] > 0.02)[:3]
    records = list(ablate(store.root, pids, kinds=["distractor"]))
    assert records
    for rec in records:
        assert rec.kind == "distractor" and rec.object_mask.any()
        assert rec.delta == {"md": 0.0, "fa": 0.0, "cc": 0.0}
        assert not np.array_equal(rec.image, store.images([rec.patch_id])[0])


def test_removing_an_air_blob_lowers_md_by_its_area_and_leaves_cc(store):
    pid = int(store.index["air_fraction"].idxmax())
    records = list(ablate(store.root, [pid], kinds=["air"]))
    assert records
    for rec in records:
        assert rec.delta["md"] == pytest.approx(-rec.object_mask.sum() * (ph.D_FREE - ph.D_STROMA) / SIZE**2)
        assert rec.delta["cc"] == 0


def test_ablation_is_deterministic_and_limits_objects(store):
    a = list(ablate(store.root, [3, 4], seed=1, max_objects=2))
    b = list(ablate(store.root, [3, 4], seed=1, max_objects=2))
    assert [(r.patch_id, r.kind, r.object_id) for r in a] == [(r.patch_id, r.kind, r.object_id) for r in b]
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b))
    for pid in (3, 4):
        for kind in ("nucleus", "distractor", "air"):
            assert sum(r.patch_id == pid and r.kind == kind for r in a) <= 2


def test_ablate_from_a_config_matches_the_store(store):
    cfg_records = list(ablate((CFG, SIZE, 5), [2], kinds=["nucleus"], max_objects=1))
    store_records = list(ablate(store.root, [2], kinds=["nucleus"], max_objects=1))
    assert np.array_equal(cfg_records[0].image, store_records[0].image)
    with pytest.raises(ValueError, match="unknown ablation kinds"):
        list(ablate(store.root, [2], kinds=["cells"]))


def test_ablation_works_with_blur_shortcut_and_resized_rendering():
    cfg = dataclasses.replace(CFG, shortcut=True, um_per_px=1.0, n_samples=1)
    blocks, _ = generate_phantom(cfg, 32, seed=0)
    np.testing.assert_array_equal(original_patch((cfg, 32, 0), 4), blocks[0].images[4])
    rec = next(ablate((cfg, 32, 0), [4], kinds=["nucleus"]))
    assert rec.image.shape == (32, 32, 3) and rec.object_mask.shape == (32, 32)


def ndimage_dilate(mask: np.ndarray, px: int) -> np.ndarray:
    from scipy import ndimage

    return ndimage.binary_dilation(mask, iterations=px)
