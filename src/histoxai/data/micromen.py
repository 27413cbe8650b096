"""Ingest the real MICROMEN data (H&E slides coregistered with diffusion MRI).

Layout (DOI 10.23698/AIDA/MICROMEN; Brabec et al. 2023, NeuroImage: Clinical 37, 103365)::

    <root>/<n>/coreg_fine/ver1/HE.mat       HE: (H, W, 3) uint8 RGB at 0.5 µm/px
    <root>/<n>/coreg_fine/ver1/HE_mask.mat  HE_mask: (H, W) tissue mask;
                                            dHE_mask: (R, C) the mask on the MR grid
    <root>/<n>/coreg_fine/ver1/MR.mat       MR: struct with MD, FA, FAIP, ROI, ... (R, C)
    <root>/<n>/qupath_detections.tsv        optional QuPath export (see below)

MR voxel (r, c) covers the HE block of ``H // R`` rows by ``W // C`` columns starting
at (r * H // R, c * W // C). Files are MATLAB v7.3 (HDF5; read lazily, in tiles) or
v5 (``scipy.io.loadmat``; read whole). MATLAB stores arrays column-major, so h5py shows
their axes reversed ((3, W, H) for an (H, W, 3) image); this module always works in
MATLAB's (row, col) order, the order of ``summary.mat`` and of MATLAB's ``imagesc``.
If ``HE_mask.mat`` lacks the masks they are looked up in ``HE.mat``.

A voxel is kept when its whole HE block is inside ``HE_mask``, ``dHE_mask`` is 1,
``ROI`` is 1 and, with ``erosion_vox`` k > 1, it survives the published ROI erosion
(``imerode(imfill(ROI .* dHE_mask, 'holes'), strel('square', k))``). Each kept voxel
gives one patch (its HE block area-averaged to ``patch_size_px``) and one index row:
``row``, ``col`` (0-based voxel position), ``md``, ``fa``, ``faip`` (MR maps), ``cc``
(nuclei in the block) and ``cc_source``.

``cc`` comes from a QuPath detection export when one is found (``cfg.qupath_files``,
relative to ``<root>/<n>/``): a tab-separated file with one row per detected nucleus
and the centroid in HE pixels of ``HE.mat`` as ``Centroid X px`` / ``Centroid Y px``
or in µm as ``Centroid X µm`` / ``Centroid Y µm`` (divided by ``he_um_per_px``; X is
the column, Y the row). This is what QuPath's "Export measurements" (detections)
writes for an image of ``HE.mat``. Without one, nuclei are counted with the classical
detector of ``histoxai.data.nuclei``.

Bad input raises :class:`IngestError` naming the sample, the file and the problem, or
with ``on_bad_sample: skip`` the sample is left out and listed in ``report["skipped"]``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse
from scipy import ndimage as ndi
from tqdm import tqdm

from histoxai.config import MicromenConfig
from histoxai.data.nuclei import HALO_UM, count_nuclei
from histoxai.data.store import SampleBlock
from histoxai.errors import InputError

SAMPLE_SUBDIR = Path("coreg_fine", "ver1")
MR_TARGETS: dict[str, str] = {"md": "MD", "fa": "FA", "faip": "FAIP"}
"""Index column -> field of the ``MR`` struct."""


class IngestError(InputError):
    """A MICROMEN sample cannot be ingested: names the sample, the file and the problem."""

    def __init__(self, sample: str, file: str | Path, problem: str):
        self.sample, self.file, self.problem = sample, str(file), problem
        where = f"MICROMEN sample {sample}" if sample else "MICROMEN"
        super().__init__(f"{where}: {file}: {problem}")


class MatFile:
    """One MATLAB file, v7.3 (HDF5, read lazily) or v5, seen in MATLAB's axis order."""

    def __init__(self, path: Path, sample: str):
        self.path, self.sample = path, sample
        if not path.is_file():
            raise IngestError(sample, path, "file is missing")
        try:
            if h5py.is_hdf5(path):
                self.format, self._h5 = "v7.3", h5py.File(path, "r")
            else:
                self.format, self._h5 = "v5", None
                self._v5 = scipy.io.loadmat(path, squeeze_me=False, struct_as_record=True)
        except Exception as err:  # h5py/scipy raise many types for damaged files
            raise IngestError(sample, path, f"not a readable MATLAB v7.3 (HDF5) or v5 file: {err}") from err

    def __enter__(self) -> MatFile:
        return self

    def __exit__(self, *exc) -> None:
        if self._h5 is not None:
            self._h5.close()

    def __contains__(self, name: str) -> bool:
        return name in (self._h5 if self._h5 is not None else self._v5)

    def _node(self, name: str, field: str | None = None):
        if name not in self:
            raise IngestError(self.sample, self.path, f"has no variable {name!r}")
        if self._h5 is None:
            value = self._v5[name]
            if field is None:
                return value
            if value.dtype.names is None or field not in value.dtype.names or value.size != 1:
                raise IngestError(self.sample, self.path, f"{name} is not a struct with field {field!r}")
            return value[field].flat[0]
        node = self._h5[name]
        if field is not None:
            if not isinstance(node, h5py.Group) or field not in node:
                raise IngestError(self.sample, self.path, f"{name} is not a struct with field {field!r}")
            node = node[field]
        if not isinstance(node, h5py.Dataset) or node.dtype.kind not in "biuf":
            raise IngestError(self.sample, self.path, f"{name} is not a numeric array")
        return node

    def dtype(self, name: str) -> np.dtype:
        return self._node(name).dtype

    def shape(self, name: str) -> tuple[int, ...]:
        """Shape of variable ``name`` in MATLAB order."""
        node = self._node(name)
        return tuple(node.shape[::-1]) if self._h5 is not None else node.shape

    def read(self, name: str, field: str | None = None) -> np.ndarray:
        """Whole variable (or struct field) in MATLAB order."""
        return self._read(name, field, (slice(None), slice(None)))

    def region(self, name: str, rows: slice, cols: slice) -> np.ndarray:
        """``name[rows, cols, ...]`` in MATLAB order; from HDF5 only this part is read."""
        return self._read(name, None, (rows, cols))

    def _read(self, name: str, field: str | None, where: tuple[slice, slice]) -> np.ndarray:
        node = self._node(name, field)
        try:
            if self._h5 is None:
                return np.asarray(node)[where]
            # h5py axes are MATLAB's reversed: (..., cols, rows).
            return np.asarray(node[(Ellipsis, *where[::-1])]).transpose()
        except IngestError:
            raise
        except Exception as err:
            label = f"{name}.{field}" if field else name
            raise IngestError(self.sample, self.path, f"cannot read {label}: {err}") from err


def micromen_blocks(cfg: MicromenConfig, patch_size_px: int, report: dict) -> Iterator[SampleBlock]:
    """Yield one :class:`SampleBlock` per MICROMEN sample (named ``s<n>``).

    Args:
        cfg: the ``data.micromen`` section.
        patch_size_px: side of the square patches.
        report: filled in place (it becomes the store's ``card.json``): ``samples``
            (per sample: grid, block size, voxel counts, file format, ``cc_source``),
            ``skipped`` (sample, file, reason) and the ingestion settings.

    Raises:
        IngestError: bad input (with ``on_bad_sample: error``), a missing root, or no
            sample left.
    """
    root = Path(cfg.root)
    if not cfg.root or not root.is_dir():
        raise IngestError("", root, "data.micromen.root is not a directory")
    numbers = list(cfg.samples) or sorted(
        int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit()
    )
    if not numbers:
        raise IngestError("", root, "no numeric sample folders (<root>/<n>/coreg_fine/ver1)")
    report.update(erosion_vox=cfg.erosion_vox, he_um_per_px=cfg.he_um_per_px, samples={}, skipped=[])
    for n in tqdm(numbers, desc="micromen samples", unit="sample"):
        name = f"s{n}"
        try:
            block, info = ingest_sample(root / str(n), name, cfg, patch_size_px)
        except IngestError as err:
            if cfg.on_bad_sample != "skip":
                raise
            report["skipped"].append({"sample": name, "file": err.file, "reason": err.problem})
            continue
        report["samples"][name] = info
        yield block
    if not report["samples"]:
        raise IngestError("", root, f"no sample could be ingested; skipped: {report['skipped']}")


def ingest_sample(
    folder: Path, name: str, cfg: MicromenConfig, patch_size_px: int
) -> tuple[SampleBlock, dict]:
    """Patches and index rows of one sample folder ``<root>/<n>``; see the module docs."""
    if not folder.is_dir():
        raise IngestError(name, folder, "sample folder is missing")
    d = folder / SAMPLE_SUBDIR
    with MatFile(d / "MR.mat", name) as f:
        maps = {key: f.read("MR", key) for key in (*MR_TARGETS.values(), "ROI")}
        mr_file = f.path
    shapes = {key: m.shape for key, m in maps.items()}
    if len(set(shapes.values())) != 1 or maps["ROI"].ndim != 2:
        raise IngestError(name, mr_file, f"MR maps must be 2-D arrays of one shape, got {shapes}")
    grid = maps["ROI"].shape
    roi = _binary(maps["ROI"], name, mr_file, "MR.ROI")
    if not roi.any():
        raise IngestError(name, mr_file, "ROI is empty")

    with MatFile(d / "HE.mat", name) as he, _mask_file(d, he, name) as masks:
        he_shape = he.shape("HE")
        if len(he_shape) != 3 or he_shape[2] != 3:
            raise IngestError(name, he.path, f"HE must be an (H, W, 3) RGB image, got {he_shape}")
        if he.dtype("HE") != np.uint8:
            raise IngestError(name, he.path, f"HE must be uint8 RGB, got {he.dtype('HE')}")
        block = _block_size(he_shape[:2], grid, cfg.allow_he_remainder, name, he.path)
        if masks.shape("HE_mask") != he_shape[:2]:
            raise IngestError(name, masks.path, f"HE_mask is {masks.shape('HE_mask')}, HE is {he_shape[:2]}")
        if masks.shape("dHE_mask") != grid:
            raise IngestError(name, masks.path, f"dHE_mask is {masks.shape('dHE_mask')}, MR grid is {grid}")
        dhe = _binary(masks.read("dHE_mask"), name, masks.path, "dHE_mask")
        candidates = roi_mask(roi, dhe, cfg.erosion_vox)
        covered = _covered(masks, candidates, block, cfg.strip_rows_px)
        keep = candidates & covered
        if not keep.any():
            raise IngestError(
                name, mr_file, "no voxel left: no whole HE block inside HE_mask, dHE_mask and ROI"
            )
        rows, cols = np.nonzero(keep)  # row-major order
        targets = {col: maps[key][rows, cols].astype(np.float64) for col, key in MR_TARGETS.items()}
        for col, values in targets.items():
            bad = ~np.isfinite(values)
            if bad.any():
                r, c = rows[bad][0], cols[bad][0]
                raise IngestError(
                    name,
                    mr_file,
                    f"MR.{MR_TARGETS[col]} is NaN/inf at {bad.sum()} kept voxels, e.g. (row {r}, col {c})",
                )
        source, qupath = _cc_source(folder, name, cfg)
        detect = source == "detector"
        halo = int(np.ceil(HALO_UM / cfg.he_um_per_px)) if detect else 0
        if source == "qupath":  # read before the slide, so a bad export fails fast
            counts = _qupath_counts(qupath, name, block, grid, cfg.he_um_per_px)[rows, cols]
        images, cc = _patches(
            he, keep, block, patch_size_px, cfg.strip_rows_px, halo, cfg.he_um_per_px, detect
        )
        if source == "qupath":
            cc = counts
        he_format, mask_format = he.format, masks.format

    table = pd.DataFrame({"row": rows.astype(np.int32), "col": cols.astype(np.int32), **targets})
    table["cc"] = cc.astype(np.float64) if source != "none" else np.nan
    table["cc_source"] = source
    info = {
        "number": int(folder.name) if folder.name.isdigit() else folder.name,
        "he_format": he_format,
        "mask_format": mask_format,
        "mr_grid": list(grid),
        "he_px": list(he_shape[:2]),
        "block_px": list(block),
        "n_roi": int(roi.sum()),
        "n_candidates": int(candidates.sum()),
        "n_kept": int(keep.sum()),
        "cc_source": source,
        "qupath_file": str(qupath) if qupath else None,
    }
    return SampleBlock(sample=name, images=images, table=table), info


def roi_mask(roi: np.ndarray, dhe_mask: np.ndarray, erosion_vox: int) -> np.ndarray:
    """Voxels in ``roi`` and ``dhe_mask``, eroded as in the published analysis.

    ``imerode(imfill(ROI .* dHE_mask, 'holes'), strel('square', k)) .* ROI .* dHE_mask``
    (Brabec et al. 2023, ``get_ROI.m``): MATLAB pads with 1 when eroding, and an even
    square has its centre at index k/2 - 1 (0-based), hence ``origin=-1``.
    """
    inside = roi.astype(bool) & dhe_mask.astype(bool)
    if erosion_vox <= 1:
        return inside
    filled = ndi.binary_fill_holes(inside)
    square = np.ones((erosion_vox, erosion_vox), dtype=bool)
    origin = 0 if erosion_vox % 2 else -1
    return ndi.binary_erosion(filled, square, origin=origin, border_value=1) & inside


def area_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights resampling a line of ``n_in`` pixels to ``n_out`` by area.

    Output pixel i averages the input over [i, i + 1) * n_in / n_out, each input pixel
    weighted by its overlap (area averaging, like OpenCV's INTER_AREA); equal sizes
    give the identity, an integer factor the plain block mean.
    """
    edges = np.arange(n_out + 1) * (n_in / n_out)
    lo = np.maximum(edges[:-1, None], np.arange(n_in)[None, :])
    hi = np.minimum(edges[1:, None], np.arange(1, n_in + 1)[None, :])
    return np.clip(hi - lo, 0, None) / (n_in / n_out)


def resize_block(block: np.ndarray, wr, wc) -> np.ndarray:
    """(h, w, 3) uint8 block -> (p, q, 3) uint8 by area averaging.

    Args:
        block: the HE pixels of one voxel.
        wr, wc: (p, h) and (q, w) weights from :func:`area_weights`, dense or (faster,
            as they are banded) ``scipy.sparse`` arrays; sparse products also avoid
            multi-threaded BLAS, which is slow for many small products on a busy machine.
    """
    h, w, _ = block.shape
    x = wr @ np.asarray(block, dtype=np.float64).reshape(h, w * 3)  # (p, w*3)
    p = x.shape[0]
    x = wc @ x.reshape(p, w, 3).transpose(1, 0, 2).reshape(w, p * 3)  # (q, p*3)
    x = x.reshape(-1, p, 3).transpose(1, 0, 2)  # (p, q, 3)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _binary(values: np.ndarray, sample: str, file: Path, label: str) -> np.ndarray:
    values = np.nan_to_num(np.asarray(values, dtype=np.float64))
    odd = np.setdiff1d(np.unique(values), (0.0, 1.0))
    if odd.size:
        raise IngestError(sample, file, f"{label} must hold only 0 and 1, found {odd[:5].tolist()}")
    return values == 1


def _mask_file(d: Path, he: MatFile, sample: str) -> MatFile:
    path = d / "HE_mask.mat"
    if path.is_file():
        masks = MatFile(path, sample)
        if "HE_mask" in masks and "dHE_mask" in masks:
            return masks
        masks.__exit__()
        raise IngestError(sample, path, "must hold the variables HE_mask and dHE_mask")
    if "HE_mask" in he and "dHE_mask" in he:  # the published CNN script reads them from HE.mat
        return MatFile(he.path, sample)
    raise IngestError(sample, path, "file is missing (and HE.mat holds no HE_mask/dHE_mask)")


def _block_size(
    he: tuple[int, int], grid: tuple[int, int], allow_remainder: bool, sample: str, file
) -> tuple:
    block = (he[0] // grid[0], he[1] // grid[1])
    if min(block) < 1:
        raise IngestError(sample, file, f"HE of {he[0]}x{he[1]} px is smaller than the MR grid {grid}")
    rest = (he[0] % grid[0], he[1] % grid[1])
    if any(rest) and not allow_remainder:
        raise IngestError(
            sample, file,
            f"HE of {he[0]}x{he[1]} px is not a whole number of blocks of the {grid[0]}x{grid[1]} MR grid "
            f"({rest[0]} rows, {rest[1]} cols left over; set data.micromen.allow_he_remainder to ignore them)",
        )  # fmt: skip
    return block


def _tiles(candidates: np.ndarray, block: tuple[int, int], tile_px: int) -> Iterator[tuple[slice, slice]]:
    """Voxel tiles of at most ``tile_px`` pixels a side covering the candidate voxels."""
    step_r, step_c = max(1, tile_px // block[0]), max(1, tile_px // block[1])
    rows, cols = np.nonzero(candidates)
    for r0 in range(rows.min(), rows.max() + 1, step_r):
        for c0 in range(cols.min(), cols.max() + 1, step_c):
            tile = (slice(r0, r0 + step_r), slice(c0, c0 + step_c))
            if candidates[tile].any():
                yield tile


def _covered(masks: MatFile, candidates: np.ndarray, block: tuple[int, int], tile_px: int) -> np.ndarray:
    """(R, C) bool: the whole HE block of the voxel is inside ``HE_mask`` (read in tiles)."""
    bh, bw = block
    covered = np.zeros(candidates.shape, dtype=bool)
    if not candidates.any():
        return covered
    for vr, vc in _tiles(candidates, block, tile_px):
        m = masks.region("HE_mask", slice(vr.start * bh, vr.stop * bh), slice(vc.start * bw, vc.stop * bw))
        nr, nc = m.shape[0] // bh, m.shape[1] // bw
        for i in range(nr):  # one voxel row at a time keeps the temporaries small
            band = m[i * bh : (i + 1) * bh, : nc * bw] != 0
            covered[vr.start + i, vc.start : vc.start + nc] = band.reshape(bh, nc, bw).all(axis=(0, 2))
        del m  # before the next tile is read, so only one tile is held
    return covered


def _patches(
    he: MatFile, keep, block, size, tile_px, halo, um_per_px, detect
) -> tuple[np.ndarray, np.ndarray]:
    """Patches (n, size, size, 3) of the kept voxels in row-major order, and nuclei counts."""
    bh, bw = block
    h, w = he.shape("HE")[:2]
    position = np.full(keep.shape, -1, dtype=np.int64)
    position[keep] = np.arange(keep.sum())
    images = np.empty((int(keep.sum()), size, size, 3), dtype=np.uint8)
    counts = np.zeros(len(images), dtype=np.int64)
    wr, wc = (scipy.sparse.csr_array(area_weights(n, size)) for n in block)
    tiles = list(_tiles(keep, block, tile_px))
    for vr, vc in tqdm(tiles, desc="HE tiles", unit="tile", leave=False):
        top, left = max(0, vr.start * bh - halo), max(0, vc.start * bw - halo)
        pixels = he.region(
            "HE", slice(top, min(h, vr.stop * bh + halo)), slice(left, min(w, vc.stop * bw + halo))
        )
        for r, c in zip(*np.nonzero(keep[vr, vc])):
            r0, c0 = (vr.start + r) * bh - top, (vc.start + c) * bw - left
            i = position[vr.start + r, vc.start + c]
            images[i] = resize_block(pixels[r0 : r0 + bh, c0 : c0 + bw], wr, wc)
            if detect:
                a, b = max(0, r0 - halo), max(0, c0 - halo)
                crop = pixels[a : r0 + bh + halo, b : c0 + bw + halo]
                core = (slice(r0 - a, r0 - a + bh), slice(c0 - b, c0 - b + bw))
                counts[i] = count_nuclei(crop, um_per_px, core=core)
        del pixels  # before the next tile is read, so only one tile is held
    return images, counts


def _cc_source(folder: Path, sample: str, cfg: MicromenConfig) -> tuple[str, Path | None]:
    if cfg.cc_source in ("none", "detector"):
        return cfg.cc_source, None
    found = next((folder / p for p in cfg.qupath_files if (folder / p).is_file()), None)
    if found is not None:
        return "qupath", found
    if cfg.cc_source == "qupath":
        raise IngestError(
            sample, folder / cfg.qupath_files[0], "QuPath export is missing (cc_source: qupath)"
        )
    return "detector", None


def _qupath_counts(path: Path, sample: str, block, grid, um_per_px: float) -> np.ndarray:
    """(R, C) number of QuPath detections whose centroid falls in each voxel's block."""
    try:
        table = pd.read_csv(path, sep="\t")
    except Exception as err:
        raise IngestError(sample, path, f"cannot read the QuPath export: {err}") from err
    xy = []
    for axis in ("X", "Y"):
        px = [c for c in table.columns if re.fullmatch(rf"Centroid[ _]{axis}[ _]px", c)]
        um = [c for c in table.columns if re.fullmatch(rf"Centroid[ _]{axis}[ _](µm|μm|um)", c)]
        if px:
            xy.append(table[px[0]].to_numpy(np.float64))
        elif um:
            xy.append(table[um[0]].to_numpy(np.float64) / um_per_px)
        else:
            raise IngestError(
                sample,
                path,
                f"needs a 'Centroid {axis} µm' or 'Centroid {axis} px' column, has {list(table.columns)}",
            )
    x, y = xy
    ok = np.isfinite(x) & np.isfinite(y)
    r, c = np.floor(y[ok] / block[0]).astype(np.int64), np.floor(x[ok] / block[1]).astype(np.int64)
    inside = (r >= 0) & (r < grid[0]) & (c >= 0) & (c < grid[1])
    flat = np.bincount(r[inside] * grid[1] + c[inside], minlength=grid[0] * grid[1])
    return flat.reshape(grid)
