"""The patch store: uint8 patches and masks as memory-mappable ``.npy`` files, one per
sample, with a Parquet index. Every later stage and the dashboard read it.

Layout of a store directory::

    index.parquet          one row per patch (see ``INDEX_COLUMNS``)
    card.json              dataset card: source, generator, targets, ceilings
    patches/<sample>.npy   (n_sample, H, W, 3) uint8
    masks/<sample>.npy     (n_sample, H, W) uint8 labels, see ``MASK_CLASSES`` (optional)
    instances/<sample>.npy (n_sample, H, W) int32 nucleus id per pixel, 0 = none (optional)
    <table>.parquet        optional per-patch tables (e.g. ``nuclei``), keyed by ``patch_id``

A store is written to a temporary directory and renamed into place when complete, so a
reader sees either the previous store or the new one, never a half-written one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from histoxai.errors import InputError, MissingInputError
from histoxai.io import atomic_path, open_npy

MASK_CLASSES: tuple[str, ...] = ("stroma", "nuclei", "air", "distractor")
"""Pixel labels of ``masks/<sample>.npy``: the value is the position in this tuple."""

TARGETS: tuple[str, ...] = ("md", "fa", "faip", "cc")
"""Per-patch regression targets a store can hold (NaN where a source lacks one)."""

SPLIT_SCHEMES: tuple[str, ...] = ("random", "spatial_block", "leave_sample_out")
SPLITS: tuple[str, ...] = ("train", "val", "test", "out")
"""``out``: a sample held out of training altogether (out-of-sample evaluation)."""


def split_column(scheme: str) -> str:
    """Index column holding the split of ``scheme`` (e.g. ``split_random``)."""
    if scheme not in SPLIT_SCHEMES:
        raise InputError(f"unknown split scheme {scheme!r}; expected one of {SPLIT_SCHEMES}")
    return f"split_{scheme}"


@dataclass
class SampleBlock:
    """All patches of one sample, as handed to :func:`write_store`.

    Attributes:
        sample: sample name, used as file name (letters, digits, ``-``, ``_``).
        images: (n, H, W, 3) uint8 patches.
        table: n rows with at least ``row`` and ``col`` (voxel position) and any of
            ``TARGETS``; extra columns are kept in the index.
        masks: (n, H, W) uint8 labels (``MASK_CLASSES``), or None.
        tables: extra per-patch tables with an ``offset`` column (0..n-1 within the
            block); written as ``<name>.parquet`` with ``patch_id`` instead of offset.
        instances: (n, H, W) int32 nucleus instance id per pixel (0: none; ids unique
            within a patch), or None.
    """

    sample: str
    images: np.ndarray
    table: pd.DataFrame
    masks: np.ndarray | None = None
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    instances: np.ndarray | None = None

    def check(self) -> None:
        n = len(self.table)
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise InputError(
                f"sample {self.sample}: images must be (n, H, W, 3) uint8, "
                f"got {self.images.shape} {self.images.dtype}"
            )
        if self.images.shape[0] != n:
            raise InputError(f"sample {self.sample}: {self.images.shape[0]} images but {n} table rows")
        if self.masks is not None and self.masks.shape != self.images.shape[:3]:
            raise InputError(
                f"sample {self.sample}: masks {self.masks.shape} do not match images {self.images.shape[:3]}"
            )
        if self.instances is not None and self.instances.shape != self.images.shape[:3]:
            raise InputError(
                f"sample {self.sample}: instances {self.instances.shape} do not match images "
                f"{self.images.shape[:3]}"
            )
        missing = {"row", "col"} - set(self.table.columns)
        if missing:
            raise InputError(f"sample {self.sample}: table lacks columns {sorted(missing)}")
        if not self.sample.replace("-", "").replace("_", "").isalnum():
            raise InputError(f"sample name {self.sample!r} must be letters, digits, '-' or '_'")


def write_store(
    root: str | Path,
    blocks: Iterable[SampleBlock],
    card: dict,
    assign_splits: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
) -> PatchStore:
    """Write a patch store atomically and return it opened.

    Args:
        root: store directory; replaced as a whole when the new store is complete.
        blocks: one block per sample, consumed one at a time (peak memory: one sample).
        card: dataset card, written as ``card.json`` (``patch_size_px`` and ``targets``
            are filled in).
        assign_splits: maps the full index to the index with ``split_<scheme>`` columns.

    Returns:
        The written store.
    """
    root = Path(root)
    with atomic_path(root) as tmp:
        (tmp / "patches").mkdir(parents=True)
        frames, extra, next_id, size, with_masks, with_inst = [], {}, 0, None, None, None
        for block in blocks:
            block.check()
            if size is None:
                size = block.images.shape[1:3]
                with_masks = block.masks is not None
                with_inst = block.instances is not None
            if block.images.shape[1:3] != size:
                raise InputError(f"sample {block.sample}: patch size {block.images.shape[1:3]} != {size}")
            if (block.masks is not None) != with_masks:
                raise InputError(f"sample {block.sample}: masks must be given for all samples or none")
            if (block.instances is not None) != with_inst:
                raise InputError(f"sample {block.sample}: instances must be given for all samples or none")
            if any(f["sample"].iat[0] == block.sample for f in frames):
                raise InputError(f"sample {block.sample} appears twice")
            n = len(block.table)
            np.save(tmp / "patches" / f"{block.sample}.npy", np.ascontiguousarray(block.images))
            if block.masks is not None:
                (tmp / "masks").mkdir(exist_ok=True)
                np.save(tmp / "masks" / f"{block.sample}.npy", block.masks.astype(np.uint8))
            if block.instances is not None:
                (tmp / "instances").mkdir(exist_ok=True)
                np.save(tmp / "instances" / f"{block.sample}.npy", block.instances.astype(np.int32))
            table = block.table.reset_index(drop=True).copy()
            table.insert(0, "patch_id", np.arange(next_id, next_id + n, dtype=np.int64))
            table.insert(1, "sample", block.sample)
            table.insert(2, "offset", np.arange(n, dtype=np.int64))
            for target in TARGETS:
                if target not in table:
                    table[target] = np.nan
            frames.append(table)
            for name, t in block.tables.items():
                t = t.copy()
                t.insert(0, "patch_id", t.pop("offset").to_numpy(np.int64) + next_id)
                extra.setdefault(name, []).append(t)
            next_id += n
        if not frames:
            raise InputError(f"no samples to write to {root}")
        index = pd.concat(frames, ignore_index=True)
        index[["row", "col"]] = index[["row", "col"]].astype(np.int32)
        if assign_splits is not None:
            index = assign_splits(index)
        index.to_parquet(tmp / "index.parquet", index=False)
        for name, parts in extra.items():
            pd.concat(parts, ignore_index=True).to_parquet(tmp / f"{name}.parquet", index=False)
        targets = [t for t in TARGETS if index[t].notna().any()]
        card = {**card, "patch_size_px": int(size[0]), "targets": targets, "n_patches": len(index)}
        (tmp / "card.json").write_text(json.dumps(card, indent=2, default=_jsonable) + "\n")
    return PatchStore(root)


def _read_card(path: Path) -> dict:
    """``card.json`` with the keys every reader needs, or a ValueError naming the file."""
    if not path.is_file():
        raise InputError(f"{path} is missing; run `histoxai prepare`")
    try:
        card = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise InputError(f"{path} is not valid JSON ({err}); run `histoxai prepare`") from None
    if not isinstance(card, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(card).__name__}")
    size = card.get("patch_size_px")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise InputError(f"{path}: patch_size_px={size!r}, expected a positive integer")
    if not isinstance(card.get("targets"), list):
        raise InputError(f"{path}: targets={card.get('targets')!r}, expected a list")
    return card


def _jsonable(value):
    return value.item() if hasattr(value, "item") else value.tolist()


class PatchStore:
    """Read access to a patch store. Reading patches by id is O(1) (memory-mapped).

    Example:
        >>> store = PatchStore("data/patches")
        >>> ids = store.ids(split="test", scheme="random")
        >>> images = store.images(ids[:8])  # (8, H, W, 3) uint8
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        index_path = self.root / "index.parquet"
        if not index_path.is_file():
            raise MissingInputError(
                f"no patch store at {self.root}: {index_path} is missing (run `histoxai prepare`)"
            )
        try:
            self.index = pd.read_parquet(index_path)
        except Exception as err:  # pyarrow raises several types for a damaged file
            raise InputError(
                f"{index_path} is not a readable Parquet index ({err}); run `histoxai prepare`"
            ) from None
        self.card: dict = _read_card(self.root / "card.json")
        missing = sorted({"patch_id", "sample", "offset", "row", "col"} - set(self.index.columns))
        if missing:
            raise InputError(f"{index_path}: missing columns {missing}")
        if not np.array_equal(self.index["patch_id"].to_numpy(), np.arange(len(self.index))):
            raise InputError(f"{index_path}: patch_id must be 0..n-1 in order")
        self._sample = self.index["sample"].to_numpy()
        self._offset = self.index["offset"].to_numpy()
        self._samples = list(dict.fromkeys(self._sample))
        self._images: dict[str, np.ndarray] = {}
        self._masks: dict[str, np.ndarray] = {}
        self._instances: dict[str, np.ndarray] = {}
        self.verify()

    def verify(self) -> None:
        """Check every array against the index and the card (cheap: headers and memory maps).

        Raises:
            ValueError: naming the damaged file: an array that is missing, truncated or not
                a ``.npy``, of the wrong shape or dtype, or shorter than an index offset.
        """
        index_path = self.root / "index.parquet"
        size = self.card["patch_size_px"]
        last = pd.Series(self._offset).groupby(self._sample).max()
        folders = [("patches", self._images, (size, size, 3), np.uint8)]
        if self.has_masks:
            folders.append(("masks", self._masks, (size, size), np.uint8))
        if self.has_instances:
            folders.append(("instances", self._instances, (size, size), np.int32))
        for folder, cache, shape, dtype in folders:
            for sample in self._samples:
                path = self.root / folder / f"{sample}.npy"
                if not path.is_file():
                    raise InputError(
                        f"{path} is missing (sample {sample} of {index_path}); run `histoxai prepare`"
                    )
                array = open_npy(path, "run `histoxai prepare`")
                if array.dtype != dtype or array.shape[1:] != shape:
                    raise InputError(
                        f"{path}: expected (n, {', '.join(map(str, shape))}) {np.dtype(dtype).name} as card.json's "
                        f"patch_size_px={size} says, got {array.shape} {array.dtype}"
                    )
                if int(last[sample]) >= len(array):
                    raise InputError(
                        f"{index_path}: offset {int(last[sample])} of sample {sample} is past the "
                        f"{len(array)} patches in {path}"
                    )
                cache[sample] = array

    def __len__(self) -> int:
        return len(self.index)

    @property
    def patch_size(self) -> int:
        return int(self.card["patch_size_px"])

    @property
    def targets(self) -> list[str]:
        """Targets with at least one value in this store."""
        return list(self.card["targets"])

    @property
    def samples(self) -> list[str]:
        return list(self._samples)

    @property
    def has_masks(self) -> bool:
        return (self.root / "masks").is_dir()

    @property
    def has_instances(self) -> bool:
        """Whether nucleus instance masks are stored (the phantom; never MICROMEN)."""
        return (self.root / "instances").is_dir()

    def ids(
        self, split: str | None = None, scheme: str = "random", samples: Iterable[str] | None = None
    ) -> np.ndarray:
        """Patch ids, optionally restricted to a split of ``scheme`` and to samples."""
        keep = np.ones(len(self.index), dtype=bool)
        if split is not None:
            if split not in SPLITS:
                raise InputError(f"unknown split {split!r}; expected one of {SPLITS}")
            keep &= self.index[split_column(scheme)].to_numpy() == split
        if samples is not None:
            keep &= np.isin(self._sample, list(samples))
        return self.index["patch_id"].to_numpy()[keep]

    def images(self, ids: Iterable[int] | np.ndarray) -> np.ndarray:
        """(B, H, W, 3) uint8 patches for ``ids``."""
        return self._gather(ids, self._images, "patches")

    def masks(self, ids: Iterable[int] | np.ndarray) -> np.ndarray:
        """(B, H, W) uint8 mask labels (``MASK_CLASSES``) for ``ids``."""
        if not self.has_masks:
            raise MissingInputError(f"store {self.root} has no masks (masks/ is missing)")
        return self._gather(ids, self._masks, "masks")

    def instances(self, ids: Iterable[int] | np.ndarray) -> np.ndarray:
        """(B, H, W) int32 nucleus instance id per pixel for ``ids`` (0: no nucleus; ids
        are unique within a patch and match the ``nucleus`` column of ``table("nuclei")``)."""
        if not self.has_instances:
            raise MissingInputError(f"store {self.root} has no instance masks (instances/ is missing)")
        return self._gather(ids, self._instances, "instances")

    def table(self, name: str) -> pd.DataFrame:
        """An extra per-patch table (e.g. ``nuclei``) keyed by ``patch_id``."""
        path = self.root / f"{name}.parquet"
        if not path.is_file():
            raise MissingInputError(f"store {self.root} has no table {name!r} ({path} is missing)")
        return pd.read_parquet(path)

    def _gather(self, ids, cache: dict[str, np.ndarray], folder: str) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self.index)):
            raise IndexError(f"patch ids out of range 0..{len(self.index) - 1} in store {self.root}")
        samples, offsets = self._sample[ids], self._offset[ids]
        first = self._array(self._samples[0], cache, folder)
        out = np.empty((len(ids), *first.shape[1:]), dtype=first.dtype)
        for sample in dict.fromkeys(samples):
            sel = np.flatnonzero(samples == sample)
            read_rows(self._array(sample, cache, folder), offsets[sel], out, sel)
        return out

    def _array(self, sample: str, cache: dict[str, np.ndarray], folder: str) -> np.ndarray:
        if sample not in cache:
            cache[sample] = np.load(self.root / folder / f"{sample}.npy", mmap_mode="r")
        return cache[sample]


def read_rows(array: np.ndarray, rows: np.ndarray, out: np.ndarray, at: np.ndarray) -> None:
    """Copy ``array[rows]`` into ``out[at]``; ``array`` is a memory-mapped ``.npy``.

    Rows are read with ``pread`` from the mapped file, not through the mapping: pages read
    through a mapping stay in the process's resident set, which would then grow with the
    patches read (805 MiB for 16,384 patches at 128 px); the kernel's page cache serves
    both the same.
    """
    if not isinstance(array, np.memmap) or not array.size:
        out[at] = array[rows]
        return
    row_bytes = out[0].nbytes if len(out) else 0
    fd = os.open(array.filename, os.O_RDONLY)
    try:
        for i, r in zip(at.tolist(), rows.tolist()):
            got = os.preadv(fd, [memoryview(out[i]).cast("B")], array.offset + r * row_bytes)
            if got != row_bytes:
                raise InputError(f"{array.filename}: row {r} is truncated ({got} of {row_bytes} bytes)")
    finally:
        os.close(fd)
