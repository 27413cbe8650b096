"""The saliency store: raw maps per (target, method variant), aligned to patch ids.

Layout of a saliency directory (one per explained model)::

    manifest.json                   model URI/name/version, targets, variants, patch ids,
                                    chunk size, native map resolutions and the list of
                                    completed (target, variant) pairs
    meta.parquet                    one row per (patch, target): patch_id, sample, row, col,
                                    split, target, y, y_hat, delta, rel_delta
    maps/<target>__<variant>.npy        (N, H, W) float16 maps divided by their scale, rows
                                        in the order of ``patch_ids`` in the manifest
    maps/<target>__<variant>.scale.npy  (N,) float32 per-map scale (a power of two)
    maps/<target>__<variant>.thumb.npy  (N, 2, h, w) float16 display-size planes of maps
                                        larger than the dashboard shows (see
                                        :mod:`histoxai.explain.thumbnails`), same scale
    maps/<target>__<variant>.chunks.npy (n_chunks, len(CHUNK_FIELDS)) float64: per chunk
                                        of ``chunk_size`` rows, done flag and statistics

Maps are kept signed and unnormalised: ``read`` returns ``stored * scale`` in float32.
The per-map scale is the power of two that brings the map's max |value| to
(2^14, 2^15], so float16 holds every value of a map to 11 significant bits over 29
binades below its maximum (raw float16 put a quarter of SmoothGrad's values in its
subnormal range; ``benchmarks/bench_explain_precision.py`` measures the choice).

Files are preallocated and written row by row (``os.pwrite``; never mapped while
writing, so host memory does not grow with N); a chunk's done flag is written after
its rows, so a killed run redoes at most the chunk it was in. Several workers write
disjoint chunks of the same files. A pair is listed as complete in the manifest once
all its chunks are done. Normalisation is a display-time choice (see :func:`normalise`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from histoxai.errors import InputError, MissingInputError
from histoxai.explain.thumbnails import has_thumbnails, thumbnail_shape, thumbnails
from histoxai.io import open_npy, write_json

META_COLUMNS = ("patch_id", "sample", "row", "col", "split", "target", "y", "y_hat", "delta", "rel_delta")
FORMAT = 2
CHUNK_FIELDS = ("done", "seconds", "abs_max", "nonfinite", "subnormal", "nonzero")
"""Columns of a pair's ``.chunks.npy``: done flag (written last), compute seconds, max
|value| (real units), and counts of non-finite, float16-subnormal and non-zero values."""
RESUME_KEYS = (
    "format",
    "chunk_size",
    "model_uri",
    "model_version",
    "patch_ids",
    "targets",
    "variants",
    "score",
)
"""Manifest entries that must agree for a run to resume (rather than replace) a store."""


def map_name(target: str, variant: str) -> str:
    """File stem of the maps of ``target`` explained by ``variant`` (e.g. ``md__smoothgrad_s0.2``)."""
    return f"{target}__{variant}"


def relative_error(y: np.ndarray, y_hat: np.ndarray) -> np.ndarray:
    """rΔ = (ŷ / y − 1) · 100, NaN where y == 0."""
    y = np.asarray(y, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(y != 0, (np.asarray(y_hat, dtype=np.float64) / y - 1.0) * 100.0, np.nan)


class SaliencyStore:
    """Read/write access to one saliency directory.

    Example:
        >>> sal = SaliencyStore("data/saliency/mdfa")
        >>> maps = sal.read("md", "gradcampp", rows=[0, 5])   # (2, H, W) float32, real units
        >>> rows = sal.meta.query("target == 'md' and abs(delta) > 0.2")
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        path = self.root / "manifest.json"
        if not path.is_file():
            raise MissingInputError(
                f"no saliency store at {self.root}: {path} is missing (run `histoxai explain`)"
            )
        try:
            self.manifest: dict = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise InputError(f"{path} is not valid JSON: {err}") from err
        if not isinstance(self.manifest, dict) or "patch_ids" not in self.manifest:
            raise InputError(
                f"{path}: expected a saliency manifest with 'patch_ids' (run `histoxai explain`)"
            )
        self.patch_ids = np.asarray(self.manifest["patch_ids"], dtype=np.int64)
        self._row = {int(p): i for i, p in enumerate(self.patch_ids)}
        self._meta: pd.DataFrame | None = None
        self._mapped: dict[str, np.ndarray | None] = {}  # file name -> memory map (read side)

    def verify(self) -> None:
        """Check that every complete pair's maps open and hold one map per patch id (cheap:
        headers and memory maps).

        Raises:
            MissingInputError, InputError: naming the missing or damaged file.
        """
        for name in self.manifest.get("complete", []):
            path = self.root / "maps" / f"{name}.npy"
            if not path.is_file():
                raise MissingInputError(
                    f"{path} is missing but {self.root / 'manifest.json'} lists {name} as complete; "
                    "run `histoxai explain`"
                )
            maps = open_npy(path, "run `histoxai explain`")
            if maps.ndim != 3 or len(maps) != len(self.patch_ids):
                raise InputError(
                    f"{path}: expected ({len(self.patch_ids)}, H, W) maps, one per patch id, got "
                    f"{maps.shape}; run `histoxai explain`"
                )

    # ---------------------------------------------------------------- writing

    @classmethod
    def matches(cls, root: str | Path, manifest: dict) -> bool:
        """Whether ``root`` holds a store a run described by ``manifest`` resumes."""
        try:
            old = cls(root)
        except (FileNotFoundError, ValueError, KeyError):
            return False
        return all(old.manifest.get(k) == manifest.get(k) for k in RESUME_KEYS)

    @classmethod
    def create(
        cls,
        root: str | Path,
        manifest: dict,
        meta: pd.DataFrame,
        shapes: dict[str, tuple[int, int]] | None = None,
        chunk_size: int = 0,
    ) -> SaliencyStore:
        """Start (or resume) a store in ``root``.

        An existing store with the same :data:`RESUME_KEYS` is resumed; any other content
        of ``root`` is replaced (callers build a new store beside the old one, see
        ``histoxai.explain.runner``). Every pair's files are preallocated.

        Args:
            root: the directory.
            manifest: model and run description (``patch_ids``, ``targets``, ``variants``...).
            meta: one row per (patch, target) with :data:`META_COLUMNS`.
            shapes: variant -> (H, W) of its stored maps (default: the patch size).
            chunk_size: rows per completion record (0: all rows in one chunk).
        """
        root = Path(root)
        missing = set(META_COLUMNS) - set(meta.columns)
        if missing:
            raise InputError(f"saliency meta lacks columns {sorted(missing)}")
        n = len(manifest["patch_ids"])
        manifest = {
            **manifest,
            "format": FORMAT,
            "chunk_size": int(chunk_size or n),
            "patch_ids": [int(p) for p in manifest["patch_ids"]],
        }
        if cls.matches(root, manifest):
            return cls(root)
        if root.exists():
            shutil.rmtree(root)
        (root / "maps").mkdir(parents=True)
        size = int(manifest.get("patch_size_px", 0))
        n_chunks = -(-n // manifest["chunk_size"])
        for target in manifest["targets"]:
            for variant in manifest["variants"]:
                h, w = (shapes or {}).get(variant, (size, size))
                _allocate(root / "maps" / map_name(target, variant), (n, h, w), n_chunks)
        meta.loc[:, list(META_COLUMNS)].to_parquet(root / "meta.parquet", index=False)
        write_json(root / "manifest.json", {**manifest, "complete": []})
        return cls(root)

    @property
    def chunk_size(self) -> int:
        return int(self.manifest.get("chunk_size") or len(self.patch_ids))

    @property
    def n_chunks(self) -> int:
        return -(-len(self.patch_ids) // self.chunk_size)

    def chunk_rows(self, chunk: int) -> range:
        """Row positions of ``chunk``."""
        return range(chunk * self.chunk_size, min((chunk + 1) * self.chunk_size, len(self.patch_ids)))

    def chunk_table(self, target: str, variant: str) -> np.ndarray:
        """(n_chunks, len(CHUNK_FIELDS)) float64 per-chunk record of a pair."""
        return np.load(self.root / "maps" / f"{map_name(target, variant)}.chunks.npy")

    def write_rows(
        self, target: str, variant: str, start: int, stored: np.ndarray, scale: np.ndarray
    ) -> None:
        """Write stored float16 maps (B, H, W) and their float32 scales at rows ``start``..``start+B``."""
        stem = self.root / "maps" / map_name(target, variant)
        self._mapped.clear()
        _pwrite_rows(Path(f"{stem}.npy"), start, np.ascontiguousarray(stored, dtype=np.float16))
        _pwrite_rows(Path(f"{stem}.scale.npy"), start, np.ascontiguousarray(scale, dtype=np.float32))
        if Path(f"{stem}.thumb.npy").is_file():
            _pwrite_rows(Path(f"{stem}.thumb.npy"), start, thumbnails(stored))

    def finish_chunk(self, target: str, variant: str, chunk: int, stats: Sequence[float]) -> None:
        """Record a chunk's statistics, then (last, one write) its done flag."""
        path = self.root / "maps" / f"{map_name(target, variant)}.chunks.npy"
        rows = np.asarray([[1.0, *stats]], dtype=np.float64)
        if rows.shape[1] != len(CHUNK_FIELDS):
            raise ValueError(f"chunk statistics {list(stats)}: expected {CHUNK_FIELDS[1:]}")
        stem = self.root / "maps" / map_name(target, variant)
        for done in (Path(f"{stem}.npy"), Path(f"{stem}.scale.npy"), Path(f"{stem}.thumb.npy")):
            if done.is_file():
                _fsync(done)  # the rows reach the disk before the flag that vouches for them
        _pwrite_rows(path, chunk, rows[:, 1:], column=1)
        _pwrite_rows(path, chunk, rows[:, :1], column=0)

    def mark_complete(self, target: str, variant: str) -> dict:
        """List the pair as complete (all its chunks must be done); returns its statistics."""
        table = self.chunk_table(target, variant)
        if not table[:, 0].all():
            todo = np.flatnonzero(table[:, 0] == 0).tolist()
            raise RuntimeError(f"{self.root}: {map_name(target, variant)} chunks {todo} are not done")
        name = map_name(target, variant)
        values = int(np.prod(self.maps(target, variant, check=False).shape))
        seconds = float(table[:, 1].sum())
        info = {
            "seconds": round(seconds, 3),
            "maps_per_s": round(len(self.patch_ids) / max(seconds, 1e-9), 2),
            "abs_max": float(table[:, 2].max()),
            "nonfinite_fraction": float(table[:, 3].sum() / max(values, 1)),
            "subnormal_fraction": float(table[:, 4].sum() / max(table[:, 5].sum(), 1)),
        }
        self.manifest = {
            **self.manifest,
            "complete": sorted({*self.manifest.get("complete", []), name}),
            "timings": {**self.manifest.get("timings", {}), name: info},
        }
        write_json(self.root / "manifest.json", self.manifest)
        return info

    def write_maps(self, target: str, variant: str, maps: np.ndarray, info: dict | None = None) -> None:
        """Store (N, H, W) float32 maps for all patch ids at once and mark the pair complete."""
        maps = np.asarray(maps, dtype=np.float32)
        if maps.shape[0] != len(self.patch_ids):
            raise InputError(
                f"{map_name(target, variant)}: {maps.shape[0]} maps for {len(self.patch_ids)} patches"
            )
        stem = self.root / "maps" / map_name(target, variant)
        if self.maps(target, variant, check=False).shape != maps.shape:
            self._mapped.clear()
            _allocate(stem, maps.shape, self.n_chunks)  # a store created without the patch size
        for chunk in range(self.n_chunks):
            rows = self.chunk_rows(chunk)
            stored, scale, stats = quantise(maps[rows.start : rows.stop])
            self.write_rows(target, variant, rows.start, stored, scale)
            self.finish_chunk(target, variant, chunk, [0.0, *stats])
        self.mark_complete(target, variant)

    # ---------------------------------------------------------------- reading

    @property
    def meta(self) -> pd.DataFrame:
        if self._meta is None:
            self._meta = pd.read_parquet(self.root / "meta.parquet")
        return self._meta

    @property
    def targets(self) -> list[str]:
        return list(self.manifest["targets"])

    @property
    def variants(self) -> dict[str, dict]:
        """Variant name -> ``{"method": ..., "params": {...}}``."""
        return dict(self.manifest["variants"])

    def is_complete(self, target: str, variant: str) -> bool:
        return map_name(target, variant) in self.manifest.get("complete", [])

    def maps(self, target: str, variant: str, check: bool = True) -> np.ndarray:
        """(N, H, W) float16 *stored* maps, memory-mapped: divided by their per-map scale
        (``.scale.npy``) in stores of format 2. Read real units with :meth:`read`."""
        if check and not self.is_complete(target, variant):
            raise KeyError(f"{self.root}: maps for target {target!r}, variant {variant!r} are not complete")
        return np.load(self.root / "maps" / f"{map_name(target, variant)}.npy", mmap_mode="r")

    def _map(self, name: str) -> np.ndarray | None:
        """Memory map of ``maps/<name>`` kept open (None: no such file); for complete pairs."""
        if name not in self._mapped:
            path = self.root / "maps" / name
            self._mapped[name] = np.load(path, mmap_mode="r") if path.is_file() else None
        return self._mapped[name]

    def read_thumbnails(self, target: str, variant: str, rows) -> np.ndarray | None:
        """(n, 2, h, w) float32 thumbnail planes of ``rows`` in real units, or None where the
        pair has none (maps no larger than they are shown, or a store written before them)."""
        if not self.is_complete(target, variant):
            raise KeyError(f"{self.root}: maps for target {target!r}, variant {variant!r} are not complete")
        name = map_name(target, variant)
        thumbs = self._map(f"{name}.thumb.npy")
        if thumbs is None:
            return None
        idx = np.asarray(rows, dtype=np.int64)
        return (
            np.asarray(thumbs[idx], dtype=np.float32)
            * self._map(f"{name}.scale.npy")[idx][:, None, None, None]
        )

    def read(self, target: str, variant: str, rows=None) -> np.ndarray:
        """(N, H, W) float32 maps in real units: the one way to read maps.

        Args:
            target: explained head.
            variant: method variant name.
            rows: positions in ``patch_ids`` order (see :meth:`rows`), or None for all.
        """
        if not self.is_complete(target, variant):
            raise KeyError(f"{self.root}: maps for target {target!r}, variant {variant!r} are not complete")
        name = map_name(target, variant)
        idx = slice(None) if rows is None else np.asarray(rows, dtype=np.int64)
        out = np.asarray(self._map(f"{name}.npy")[idx], dtype=np.float32)
        scale = self._map(f"{name}.scale.npy")
        if scale is not None:  # stores before format 2 hold raw float16 maps
            out *= scale[idx][:, None, None]
        return out

    def native_resolution(self, variant: str) -> tuple[int, int]:
        """(h, w) of ``variant``'s maps before upsampling to the patch (the patch size for
        pixel methods; the layer's feature map for CAMs; window positions for occlusion)."""
        if variant not in self.manifest["variants"]:
            raise KeyError(f"{self.root}: no variant {variant!r}; the store has {sorted(self.variants)}")
        native = self.manifest.get("native_resolution", {}).get(variant)
        if native is None:  # a store written before native resolutions were recorded
            size = int(self.manifest.get("patch_size_px", 0))
            return size, size
        return int(native[0]), int(native[1])

    def rows(self, patch_ids) -> np.ndarray:
        """Row numbers in the map arrays of ``patch_ids``."""
        return np.array([self._row[int(p)] for p in np.atleast_1d(patch_ids)], dtype=np.int64)


SCALE_TOP = 2.0**15
"""Each map is divided by a power of two that brings its max |value| into (2^14, 2^15]."""
FLOAT16_TINY = float(np.finfo(np.float16).smallest_normal)


def quantise(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """(B, H, W) float32 -> stored float16, per-map float32 scales and statistics
    ``[abs_max, nonfinite, subnormal, nonzero]`` (numpy twin of the runner's torch code)."""
    m = np.asarray(maps, dtype=np.float32)
    finite = np.isfinite(m)
    peak = np.where(finite, np.abs(m), 0).reshape(len(m), -1).max(axis=1) if m.size else np.zeros(len(m))
    with np.errstate(divide="ignore"):
        scale = np.where(peak > 0, np.exp2(np.ceil(np.log2(np.maximum(peak, 1e-38) / SCALE_TOP))), 1.0)
    scale = scale.astype(np.float32)
    stored = (m / scale[:, None, None]).astype(np.float16)
    a = np.abs(stored)
    stats = [
        float(peak.max()) if peak.size else 0.0,
        float((~finite).sum()),
        float(((a > 0) & (a < FLOAT16_TINY)).sum()),
        float((a > 0).sum()),
    ]
    return stored, scale, stats


def _allocate(stem: Path, shape: tuple[int, ...], n_chunks: int) -> None:
    """Preallocate a pair's files: maps (a sparse file of the full size), scales, chunk
    table, and thumbnails where the maps are larger than shown."""
    prealloc = np.lib.format.open_memmap(f"{stem}.npy", "w+", np.float16, tuple(shape))
    del prealloc  # rows are written with pwrite, never through a mapping
    np.save(f"{stem}.scale.npy", np.ones(shape[0], np.float32))
    np.save(f"{stem}.chunks.npy", np.zeros((n_chunks, len(CHUNK_FIELDS)), np.float64))
    Path(f"{stem}.thumb.npy").unlink(missing_ok=True)
    if has_thumbnails(tuple(shape)):
        thumbs = np.lib.format.open_memmap(f"{stem}.thumb.npy", "w+", np.float16, thumbnail_shape(shape))
        del thumbs


def _npy_offset(path: Path) -> tuple[int, tuple[int, ...], np.dtype]:
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        read_header = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read_header(fh)
        if fortran:
            raise ValueError(f"{path}: a Fortran-ordered array cannot be written by rows")
        return fh.tell(), shape, dtype


def _pwrite_rows(path: Path, start: int, rows: np.ndarray, column: int = 0) -> None:
    """Write ``rows`` at row ``start`` (and ``column`` of a 2-D array) of an ``.npy`` file in place."""
    offset, shape, dtype = _npy_offset(path)
    if rows.dtype != dtype or start + len(rows) > shape[0]:
        raise ValueError(f"{path}: cannot write {rows.dtype} {rows.shape} at row {start} of {dtype} {shape}")
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    fd = os.open(path, os.O_WRONLY)
    try:
        if column == 0 and rows[0].size * dtype.itemsize == row_bytes:
            os.pwrite(fd, rows.tobytes(), offset + start * row_bytes)
        else:  # a slice of columns of one 2-D row at a time
            for i, row in enumerate(rows):
                os.pwrite(fd, row.tobytes(), offset + (start + i) * row_bytes + column * dtype.itemsize)
    finally:
        os.close(fd)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def normalise(
    maps: np.ndarray, mode: str = "image", percentile: float = 99.5, scale: float | None = None
) -> np.ndarray:
    """Scale raw maps for display into [-1, 1] (signed) or [0, 1] (non-negative input).

    Args:
        maps: (N, H, W) or (H, W) raw maps.
        mode: ``image`` (each map by its own max |value|), ``dataset`` (all maps by
            ``scale``, e.g. the ``percentile`` of |values| over the dataset), or ``none``.
        percentile: used for ``dataset`` when ``scale`` is not given.
        scale: precomputed dataset scale.
    """
    m = np.asarray(maps, dtype=np.float32)
    if mode == "none":
        return m
    if mode == "image":
        s = np.abs(m).reshape(*m.shape[:-2], -1).max(axis=-1)[..., None, None]
    elif mode == "dataset":
        s = scale if scale is not None else np.percentile(np.abs(m), percentile)
    else:
        raise ValueError(f"normalisation {mode!r}: expected one of 'image', 'dataset', 'none'")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.clip(np.where(s > 0, m / s, 0.0), -1.0, 1.0)
