"""MICROMEN ingestion on a MICROMEN-format fixture built from the real maps of summary.mat."""

from __future__ import annotations

import json
import re

import h5py
import numpy as np
import pytest
import scipy.ndimage as ndi

from histoxai.config import MicromenConfig, load_config
from histoxai.data.micromen import IngestError, area_weights, micromen_blocks, roi_mask
from histoxai.data.store import PatchStore
from histoxai.stages import prepare
from tests.data.conftest import UM_PER_PX
from tests.fixtures.micromen_fixture import PINK, PURPLE, write_qupath, write_sample, write_v5, write_v73

BLOCK = 16  # fixture HE px per voxel


def ingest(root, patch=8, **kw):
    cfg = MicromenConfig(root=str(root), he_um_per_px=UM_PER_PX, **kw)
    report: dict = {}
    blocks = {b.sample: b for b in micromen_blocks(cfg, patch, report)}
    return blocks, report


def matlab_erode(mask: np.ndarray, k: int) -> np.ndarray:
    """imerode(mask, strel('square', k)): min over offsets -(c-1)..k-c with c = floor((k+1)/2), pad 1."""
    c = (k + 1) // 2
    out = np.ones_like(mask)
    rows, cols = mask.shape
    for r in range(rows):
        for q in range(cols):
            for dr in range(-(c - 1), k - c + 1):
                for dq in range(-(c - 1), k - c + 1):
                    if 0 <= r + dr < rows and 0 <= q + dq < cols and not mask[r + dr, q + dq]:
                        out[r, q] = False
    return out


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """imfill(mask, 'holes'): background not 4-connected to the border becomes foreground."""
    labels, _ = ndi.label(~mask)  # 4-connected background components
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return mask | ((labels > 0) & ~np.isin(labels, border))


def expected_keep(s, k: int) -> np.ndarray:
    """Voxels to keep, computed from the written arrays independently of the ingester."""
    rows, cols = s.maps["ROI"].shape
    inside = (s.maps["ROI"] == 1) & (s.dhe_mask == 1)
    whole = s.he_mask.reshape(rows, BLOCK, cols, BLOCK).min(axis=(1, 3)) == 1
    if k > 1:
        inside = inside & matlab_erode(fill_holes(inside), k)
    return inside & whole


def true_counts(s) -> np.ndarray:
    counts = np.zeros(s.maps["ROI"].shape, dtype=int)
    np.add.at(counts, (s.nuclei[:, 0] // BLOCK, s.nuclei[:, 1] // BLOCK), 1)
    return counts


@pytest.mark.parametrize("k", [0, 5, 6])
def test_counts_coordinates_and_targets_match_the_source_maps(micromen_data, k):
    root, samples = micromen_data
    blocks, report = ingest(root, erosion_vox=k)
    assert list(blocks) == ["s1", "s2", "s3"]
    for n, s in samples.items():
        block, keep = blocks[f"s{n}"], expected_keep(s, k)
        rows, cols = np.nonzero(keep)  # row-major
        t = block.table
        assert len(t) == keep.sum() == report["samples"][f"s{n}"]["n_kept"] > 0
        np.testing.assert_array_equal(t["row"], rows)
        np.testing.assert_array_equal(t["col"], cols)
        for col, field in (("md", "MD"), ("fa", "FA"), ("faip", "FAIP")):
            np.testing.assert_array_equal(t[col].to_numpy(), s.maps[field][rows, cols])
        assert block.images.shape == (len(t), 8, 8, 3)
    # each rule removes voxels: erosion, the pixel mask and dHE_mask
    s = samples[2]
    assert expected_keep(s, 5).sum() < expected_keep(s, 0).sum()
    assert (((s.maps["ROI"] == 1) & (s.dhe_mask == 1)) & ~expected_keep(s, 0)).any()
    assert ((s.maps["ROI"] == 1) & (s.dhe_mask == 0)).any()


def test_roi_erosion_matches_matlab_imerode_on_random_masks():
    rng = np.random.default_rng(1)
    for k in range(2, 8):
        mask = ndi.binary_opening(rng.random((17, 23)) < 0.75)
        holed = mask.copy()
        holed[8, 11] = False  # a hole, filled before eroding as in get_ROI.m
        got = roi_mask(holed, np.ones_like(holed), k)
        np.testing.assert_array_equal(got, holed & matlab_erode(fill_holes(holed), k), err_msg=f"k={k}")


def test_patches_are_their_he_block_area_averaged(micromen_data):
    root, samples = micromen_data
    same, _ = ingest(root, patch=BLOCK, cc_source="none")
    half, _ = ingest(root, patch=BLOCK // 2, cc_source="none")
    for n, s in samples.items():
        t = same[f"s{n}"].table
        for i, (r, c) in enumerate(zip(t["row"], t["col"])):
            he_block = s.he[r * BLOCK : (r + 1) * BLOCK, c * BLOCK : (c + 1) * BLOCK]
            np.testing.assert_array_equal(same[f"s{n}"].images[i], he_block)
            mean = he_block.reshape(8, 2, 8, 2, 3).mean(axis=(1, 3))
            assert np.abs(half[f"s{n}"].images[i] - mean).max() <= 0.5
    w = area_weights(400, 224)
    np.testing.assert_allclose(w.sum(axis=1), 1)
    np.testing.assert_allclose(w.sum(axis=0), 224 / 400)


def test_strip_reader_gives_the_same_patches_as_a_whole_slide_read(micromen_data):
    root, _ = micromen_data
    tiled, _ = ingest(root, strip_rows_px=BLOCK)  # one voxel per tile, detector halo across tiles
    strip, _ = ingest(root, strip_rows_px=3 * BLOCK + 5)
    whole, _ = ingest(root, strip_rows_px=10**6)
    for name, block in whole.items():
        for other in (tiled[name], strip[name]):
            np.testing.assert_array_equal(other.images, block.images)
            assert other.table.equals(block.table)


def test_qupath_export_gives_exact_counts_and_is_recorded(micromen_data, micromen_copy):
    root, samples = micromen_data
    blocks, report = ingest(root)
    t = blocks["s1"].table
    np.testing.assert_array_equal(t["cc"], true_counts(samples[1])[t["row"], t["col"]])
    assert t["cc"].sum() > 10 and set(t["cc_source"]) == {"qupath"}
    assert report["samples"]["s1"]["cc_source"] == "qupath"
    assert report["samples"]["s1"]["qupath_file"].endswith("qupath_detections.tsv")
    assert report["samples"]["s2"]["cc_source"] == "detector" and set(blocks["s2"].table["cc_source"]) == {
        "detector"
    }
    # pixel columns (QuPath without calibration) at the published location work too
    copy, _ = micromen_copy
    (copy / "1" / "qupath_detections.tsv").unlink()
    c = samples[1].nuclei
    tsv = copy / "1" / "cell_density" / "QuPath" / "measurements.tsv"
    tsv.parent.mkdir(parents=True)
    tsv.write_text(
        "Name\tCentroid X px\tCentroid Y px\n" + "".join(f"n\t{x + 0.5}\t{y + 0.5}\n" for y, x in c)
    )
    again, report = ingest(copy, samples=(1,))
    np.testing.assert_array_equal(again["s1"].table["cc"], t["cc"])
    assert report["samples"]["s1"]["qupath_file"] == str(tsv)
    # µm columns are converted with he_um_per_px (0.5 µm/px in MICROMEN)
    write_qupath(copy / "1" / "qupath_detections.tsv", c, um_per_px=0.5)
    cfg = MicromenConfig(root=str(copy), samples=(1,), he_um_per_px=0.5)
    (block,) = micromen_blocks(cfg, 8, {})
    np.testing.assert_array_equal(block.table["cc"], t["cc"])


def test_detector_counts_a_nucleus_cut_by_a_block_border_once(tmp_path):
    rows, cols = 3, 4
    he = np.full((rows * BLOCK, cols * BLOCK, 3), PINK.astype(np.uint8))
    yy, xx = np.mgrid[: rows * BLOCK, : cols * BLOCK]
    centres = np.array([(r * BLOCK + 8, c * BLOCK + BLOCK - 1) for r in range(rows) for c in range(cols - 1)])
    centres = np.concatenate([centres, [(BLOCK - 1, 8), (2 * BLOCK, 2 * BLOCK + 8)]])  # across row borders
    for y, x in centres:
        he[(yy - y) ** 2 + (xx - x) ** 2 <= 9] = PURPLE.astype(np.uint8)
    maps = {k: np.full((rows, cols), 0.5) for k in ("MD", "FA", "FAIP")} | {
        "ROI": np.ones((rows, cols), np.uint8)
    }
    write_sample(tmp_path / "1", maps, he, np.ones(he.shape[:2], np.uint8), np.ones((rows, cols), np.uint8))
    for tile in (BLOCK, 10**6):
        blocks, _ = ingest(tmp_path, strip_rows_px=tile)
        t = blocks["s1"].table
        expected = np.zeros((rows, cols), int)
        np.add.at(expected, (centres[:, 0] // BLOCK, centres[:, 1] // BLOCK), 1)
        np.testing.assert_array_equal(t["cc"], expected[t["row"], t["col"]])


def test_detector_counts_follow_the_true_nuclei(micromen_data):
    root, samples = micromen_data
    blocks, _ = ingest(root, cc_source="detector")
    for n, s in samples.items():
        t = blocks[f"s{n}"].table
        truth = true_counts(s)[t["row"], t["col"]]
        assert np.corrcoef(truth, t["cc"])[0, 1] > 0.7
        assert 0.7 * truth.sum() <= t["cc"].sum() <= 1.1 * truth.sum()
    none, _ = ingest(root, cc_source="none")
    assert none["s1"].table["cc"].isna().all()


def test_v5_and_v73_files_read_the_same(micromen_data, tmp_path):
    _, samples = micromen_data
    s = samples[2]
    for fmt, n in (("v7.3", 1), ("v5", 2)):
        write_sample(tmp_path / str(n), s.maps, s.he, s.he_mask, s.dhe_mask, fmt)
    d = tmp_path / "1/coreg_fine/ver1"
    with h5py.File(d / "HE.mat") as f, h5py.File(d / "MR.mat") as g:  # MATLAB's column-major layout
        assert f["HE"].shape == s.he.shape[::-1] and g["MR/MD"].shape == s.maps["MD"].shape[::-1]
    assert open(tmp_path / "1/coreg_fine/ver1/MR.mat", "rb").read(19) == b"MATLAB 7.3 MAT-file"
    blocks, report = ingest(tmp_path)
    assert [report["samples"][k]["he_format"] for k in ("s1", "s2")] == ["v7.3", "v5"]
    np.testing.assert_array_equal(blocks["s1"].images, blocks["s2"].images)
    assert blocks["s1"].table.equals(blocks["s2"].table)


def test_masks_are_found_in_he_mat_when_he_mask_mat_is_absent(micromen_data, micromen_copy):
    root, _ = micromen_data
    copy, samples = micromen_copy
    s, d = samples[2], copy / "2" / "coreg_fine" / "ver1"
    (d / "HE_mask.mat").unlink()
    write_v73(d / "HE.mat", {"HE": s.he, "HE_mask": s.he_mask, "dHE_mask": s.dhe_mask})
    a, _ = ingest(root, samples=(2,))
    b, _ = ingest(copy, samples=(2,))
    np.testing.assert_array_equal(a["s2"].images, b["s2"].images)


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _rewrite_mr(d, s, **change):
    write_v73(d / "MR.mat", {"MR": {**s.maps, **change}})


def _nan_in_roi(d, s):
    md = s.maps["MD"].copy()
    md[np.nonzero(expected_keep(s, 0))[0][3], np.nonzero(expected_keep(s, 0))[1][3]] = np.nan
    _rewrite_mr(d, s, MD=md)


BAD = {
    "missing MR.mat": ("MR.mat", "missing", lambda d, s: (d / "MR.mat").unlink()),
    "missing HE.mat": ("HE.mat", "missing", lambda d, s: (d / "HE.mat").unlink()),
    "maps of different shapes": ("MR.mat", "one shape", lambda d, s: _rewrite_mr(d, s, FA=s.maps["FA"][:-1])),
    "NaN target in a kept voxel": ("MR.mat", "NaN", _nan_in_roi),
    "empty ROI": ("MR.mat", "ROI is empty", lambda d, s: _rewrite_mr(d, s, ROI=np.zeros_like(s.maps["ROI"]))),
    "corrupt HDF5": ("HE.mat", "not a readable|cannot read", lambda d, s: _truncate(d / "HE.mat")),
    "not a MATLAB file": (
        "HE_mask.mat",
        "not a readable",
        lambda d, s: (d / "HE_mask.mat").write_text("hello"),
    ),
    "HE not a multiple of the grid": (
        "HE.mat",
        "whole number of blocks",
        lambda d, s: write_v73(d / "HE.mat", {"HE": np.concatenate([s.he, s.he[:3]])}),
    ),
    "HE_mask of another size": (
        "HE_mask.mat",
        "HE_mask is",
        lambda d, s: write_v5(d / "HE_mask.mat", {"HE_mask": s.he_mask[:-BLOCK], "dHE_mask": s.dhe_mask}),
    ),
    "HE not uint8": ("HE.mat", "must be uint8", lambda d, s: write_v73(d / "HE.mat", {"HE": s.he / 255.0})),
    "ROI not binary": ("MR.mat", "only 0 and 1", lambda d, s: _rewrite_mr(d, s, ROI=s.maps["ROI"] * 3)),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_names_sample_and_file_or_is_skipped(micromen_copy, case):
    root, samples = micromen_copy
    file, problem, damage = BAD[case]
    damage(root / "2" / "coreg_fine" / "ver1", samples[2])
    with pytest.raises(IngestError, match=problem) as err:
        ingest(root)
    assert isinstance(err.value, ValueError)
    assert "sample s2" in str(err.value) and file in str(err.value) and err.value.file.endswith(file)
    blocks, report = ingest(root, on_bad_sample="skip")
    assert list(blocks) == ["s1", "s3"] and list(report["samples"]) == ["s1", "s3"]
    (skipped,) = report["skipped"]
    assert (
        skipped["sample"] == "s2" and skipped["file"].endswith(file) and re.search(problem, skipped["reason"])
    )


def test_bad_qupath_export_names_the_file(micromen_copy):
    root, _ = micromen_copy
    (root / "1" / "qupath_detections.tsv").write_text("Name\tArea\nn\t3\n")
    with pytest.raises(IngestError, match=r"sample s1: .*qupath_detections.tsv: needs a 'Centroid X µm'"):
        ingest(root, samples=(1,))
    (root / "1" / "qupath_detections.tsv").unlink()
    with pytest.raises(IngestError, match="QuPath export is missing"):
        ingest(root, samples=(1,), cc_source="qupath")


def test_missing_sample_folder_and_sample_discovery(micromen_copy):
    root, _ = micromen_copy
    (root / "notes").mkdir()  # not a sample
    blocks, _ = ingest(root, cc_source="none")
    assert list(blocks) == ["s1", "s2", "s3"]
    with pytest.raises(IngestError, match="sample s9.*folder is missing"):
        ingest(root, samples=(1, 9))
    blocks, report = ingest(root, samples=(9, 3), on_bad_sample="skip", cc_source="none")
    assert list(blocks) == ["s3"] and report["skipped"][0]["sample"] == "s9"
    with pytest.raises(IngestError, match="no sample could be ingested"):
        ingest(root, samples=(9,), on_bad_sample="skip")
    with pytest.raises(IngestError, match="not a directory"):
        ingest(root / "nowhere")


def test_he_remainder_is_ignored_only_when_allowed(micromen_data, micromen_copy):
    root, _ = micromen_data
    copy, samples = micromen_copy
    s = samples[2]
    wider = np.concatenate([s.he, s.he[:, :5]], axis=1)
    write_v73(copy / "2/coreg_fine/ver1/HE.mat", {"HE": np.concatenate([wider, wider[:7]])})
    mask = np.pad(s.he_mask, ((0, 7), (0, 5)), constant_values=1)
    write_v73(copy / "2/coreg_fine/ver1/HE_mask.mat", {"HE_mask": mask, "dHE_mask": s.dhe_mask})
    with pytest.raises(IngestError, match="7 rows, 5 cols left over"):
        ingest(copy, samples=(2,))
    a, _ = ingest(root, samples=(2,), allow_he_remainder=True)
    b, _ = ingest(copy, samples=(2,), allow_he_remainder=True)
    np.testing.assert_array_equal(a["s2"].images, b["s2"].images)
    assert a["s2"].table.equals(b["s2"].table)


@pytest.mark.slow
def test_prepare_writes_a_store_that_round_trips(micromen_data, tmp_path):
    root, samples = micromen_data
    overrides = [
        "data.source=micromen",
        f"data.micromen.root={root}",
        "data.micromen.erosion_vox=5",
        f"data.micromen.he_um_per_px={UM_PER_PX}",
        "data.patch_size_px=8",
        f"base.patches_dir={tmp_path / 'patches'}",
        "data.split.train_samples=[s1, s2]",
    ]
    cfg = load_config(None, overrides)
    prepare.run(cfg)
    store = PatchStore(tmp_path / "patches")
    blocks, _ = ingest(root, erosion_vox=5)
    assert store.samples == ["s1", "s2", "s3"] and store.targets == ["md", "fa", "faip", "cc"]
    for name, block in blocks.items():
        ids = store.ids(samples=[name])
        np.testing.assert_array_equal(store.images(ids), block.images)
        idx = store.index.iloc[ids]
        for col in ("row", "col", "md", "fa", "faip", "cc", "cc_source"):
            np.testing.assert_array_equal(idx[col].to_numpy(), block.table[col].to_numpy())
    card = json.loads((tmp_path / "patches" / "card.json").read_text())
    assert card["source"] == "micromen" and card["skipped"] == [] and card["erosion_vox"] == 5
    assert {k: v["cc_source"] for k, v in card["samples"].items()} == {
        "s1": "qupath",
        "s2": "detector",
        "s3": "detector",
    }
    assert sum(v["n_kept"] for v in card["samples"].values()) == len(store)
