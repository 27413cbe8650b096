"""The saliency store: raw maps per (target, method variant), aligned to patch ids.

Layout of a saliency directory (one per explained model)::

    manifest.json                 model URI/name/version, targets, variants, patch ids file,
                                  and the list of completed (target, variant) pairs
    meta.parquet                  one row per (patch, target): patch_id, sample, row, col,
                                  split, target, y, y_hat, delta, rel_delta
    maps/<target>__<variant>.npy  (N, H, W) float16 raw maps (signed, not normalised), rows
                                  in the order of ``patch_ids`` in the manifest

``delta = y_hat - y``; ``rel_delta = (y_hat / y - 1) * 100`` (NaN where y == 0).
A map file is written to a temporary name and renamed; a pair is listed as complete in
the manifest only after its file is in place, so a killed run resumes where it stopped.
Normalisation is a display-time choice (see :func:`normalise`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from histoxai.io import atomic_path, write_json

META_COLUMNS = ("patch_id", "sample", "row", "col", "split", "target", "y", "y_hat", "delta", "rel_delta")


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
        >>> maps = sal.maps("md", "gradcampp")          # (N, H, W) float16, memory-mapped
        >>> rows = sal.meta.query("target == 'md' and abs(delta) > 0.2")
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        path = self.root / "manifest.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"no saliency store at {self.root}: {path} is missing (run `histoxai explain`)"
            )
        try:
            self.manifest: dict = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from err
        self.patch_ids = np.asarray(self.manifest["patch_ids"], dtype=np.int64)
        self._row = {int(p): i for i, p in enumerate(self.patch_ids)}
        self._meta: pd.DataFrame | None = None

    # ---------------------------------------------------------------- writing

    @classmethod
    def create(cls, root: str | Path, manifest: dict, meta: pd.DataFrame) -> SaliencyStore:
        """Start (or resume) a store. An existing store with the same model version,
        patch ids, targets, variants and score function is resumed; otherwise it is replaced."""
        root = Path(root)
        missing = set(META_COLUMNS) - set(meta.columns)
        if missing:
            raise ValueError(f"saliency meta lacks columns {sorted(missing)}")
        keys = ("model_uri", "model_version", "patch_ids", "targets", "variants", "score")
        manifest = {**manifest, "patch_ids": [int(p) for p in manifest["patch_ids"]]}
        if (root / "manifest.json").is_file():
            old = cls(root)
            if all(old.manifest.get(k) == manifest.get(k) for k in keys):
                return old
        (root / "maps").mkdir(parents=True, exist_ok=True)
        for stale in (root / "maps").glob("*.npy"):
            stale.unlink()
        with atomic_path(root / "meta.parquet") as tmp:
            meta.loc[:, list(META_COLUMNS)].to_parquet(tmp, index=False)
        write_json(root / "manifest.json", {**manifest, "complete": []})
        return cls(root)

    def is_complete(self, target: str, variant: str) -> bool:
        return map_name(target, variant) in self.manifest.get("complete", [])

    def write_maps(self, target: str, variant: str, maps: np.ndarray, info: dict | None = None) -> None:
        """Store (N, H, W) maps for all patch ids and mark the pair complete."""
        if maps.shape[0] != len(self.patch_ids):
            raise ValueError(
                f"{map_name(target, variant)}: {maps.shape[0]} maps for {len(self.patch_ids)} patches"
            )
        with atomic_path(self.root / "maps" / f"{map_name(target, variant)}.npy") as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, np.asarray(maps, dtype=np.float16))  # no copy when already float16
        complete = sorted({*self.manifest.get("complete", []), map_name(target, variant)})
        timings = {**self.manifest.get("timings", {}), **({map_name(target, variant): info} if info else {})}
        self.manifest = {**self.manifest, "complete": complete, "timings": timings}
        write_json(self.root / "manifest.json", self.manifest)

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

    def maps(self, target: str, variant: str) -> np.ndarray:
        """(N, H, W) float16 stored maps, memory-mapped, rows aligned with ``patch_ids``.

        Stored values, not real units when the store keeps a per-map scale: read maps
        with :meth:`read`."""
        if not self.is_complete(target, variant):
            raise KeyError(f"{self.root}: maps for target {target!r}, variant {variant!r} are not complete")
        return np.load(self.root / "maps" / f"{map_name(target, variant)}.npy", mmap_mode="r")

    def read(self, target: str, variant: str, rows=None) -> np.ndarray:
        """(N, H, W) float32 maps in real units: the one way to read maps.

        Args:
            target: explained head.
            variant: method variant name.
            rows: positions in ``patch_ids`` order (see :meth:`rows`), or None for all.
        """
        stored = self.maps(target, variant)
        if rows is None:
            out = np.asarray(stored, dtype=np.float32)
            idx = slice(None)
        else:
            idx = np.asarray(rows, dtype=np.int64)
            out = np.asarray(stored[idx], dtype=np.float32)
        scale_path = self.root / "maps" / f"{map_name(target, variant)}.scale.npy"
        if scale_path.is_file():
            out *= np.load(scale_path, mmap_mode="r")[idx][:, None, None]
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
