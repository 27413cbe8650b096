"""What the dashboard shows: the patch store, the saliency stores and the reports, loaded
once at start-up into flat numpy tables (one per explained target) for fast filtering.

A store that is missing or unreadable does not stop the app: it becomes a
:class:`Problem` naming the path and what went wrong, shown on every page.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from histoxai.data.store import SPLITS, TARGETS, PatchStore
from histoxai.explain.store import SaliencyStore

FIELDS: tuple[str, ...] = ("y", "y_hat", "delta", "rel_delta")
"""Per-patch fields with a range filter (and histogram) in the sidebar."""


@dataclass(frozen=True)
class Problem:
    """A store or report that could not be loaded."""

    path: str
    message: str


@dataclass(eq=False)
class TargetTable:
    """Meta rows of one target of one saliency store, as aligned numpy arrays.

    Attributes:
        key: the target's name in the UI and the URL (``md``, or ``mdfa:md`` when two
            stores explain the same target).
        source: saliency store name (its directory name).
        target: target name (``md``).
        patch_id: (n,) int64, ascending.
        sample: (n,) int codes into ``sample_names`` (``Catalog.samples``).
        split: (n,) int codes into ``SPLITS`` (-1: other).
        values: ``y``, ``y_hat``, ``delta``, ``rel_delta`` as (n,) float64.
        bounds: slider range per field of ``FIELDS`` (0.5th..99.5th percentile).
        grid: patch_id, sample, row, col, split per row (for the tile viewer).
        sample_names: the catalog's sample names.
        decimals: decimals that give typical values of y three significant digits.
        metrics: per-patch explanation metrics of ``histoxai xai-eval`` (its
            ``tables/per_patch_<target>.csv``): variant -> metric -> (n,) float64, NaN
            where a patch was not scored.
    """

    key: str
    source: str
    target: str
    patch_id: np.ndarray
    sample: np.ndarray
    split: np.ndarray
    values: dict[str, np.ndarray]
    bounds: dict[str, tuple[float, float]]
    grid: pd.DataFrame
    sample_names: list[str]
    decimals: int = 3
    metrics: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.patch_id)

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """Row of each patch id in this table, -1 where the table lacks it."""
        ids = np.asarray(ids, dtype=np.int64)
        if not len(self.patch_id):
            return np.full(ids.shape, -1, dtype=np.int64)
        pos = np.searchsorted(self.patch_id, ids).clip(0, len(self.patch_id) - 1)
        return np.where(self.patch_id[pos] == ids, pos, -1)


@dataclass(eq=False)
class Catalog:
    """Everything loaded; hashable by identity so filter results can be cached per catalog."""

    patches: PatchStore | None = None
    sources: dict[str, SaliencyStore] = field(default_factory=dict)
    tables: dict[str, TargetTable] = field(default_factory=dict)
    samples: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    rankings: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, list[Path]] = field(default_factory=dict)
    """xai-eval report -> its tissue-share charts (``plots/shares_<target>.png``)."""
    paths: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when patches and at least one explained target are available."""
        return self.patches is not None and bool(self.tables)

    @property
    def masks(self) -> tuple[str, ...]:
        """Ground-truth outline classes the patch store can show."""
        from histoxai.dashboard.masks import mask_choices

        return mask_choices(self.patches)

    @property
    def splits(self) -> tuple[str, ...]:
        """Splits that some explained patch belongs to, in pipeline order."""
        codes = {int(c) for t in self.tables.values() for c in np.unique(t.split) if c >= 0}
        return tuple(s for i, s in enumerate(SPLITS) if i in codes)

    def variants(self, key: str) -> list[str]:
        """Completed method variants of target ``key`` (store order)."""
        table = self.tables.get(key)
        if table is None:
            return []
        store = self.sources[table.source]
        return [v for v in store.variants if store.is_complete(table.target, v)]

    def method_of(self, key: str, variant: str) -> str:
        table = self.tables[key]
        return str(self.sources[table.source].variants.get(variant, {}).get("method", variant))

    def methods(self, key: str) -> dict[str, list[str]]:
        """Method name -> its completed variants, for target ``key``."""
        out: dict[str, list[str]] = {}
        for v in self.variants(key):
            out.setdefault(self.method_of(key, v), []).append(v)
        return out

    def variant_label(self, key: str, variant: str, limit: int | None = 60) -> str:
        """``smoothgrad_s0.2 (sigma=0.2, n=16)``-style label, cut to ``limit`` characters."""
        table = self.tables[key]
        spec = self.sources[table.source].variants.get(variant, {})
        params = spec.get("params") or {}
        text = ", ".join(f"{k}={v}" for k, v in params.items())
        label = f"{variant} ({text})" if text else variant
        return label if limit is None or len(label) <= limit else label[: limit - 1] + "…"

    def target_label(self, key: str) -> str:
        table = self.tables[key]
        return f"{table.target} · {table.source}"


def load_catalog(
    patches_dir: str | Path,
    saliency_dirs: list[str | Path] | tuple = (),
    saliency_root: str | Path | None = None,
    reports_dir: str | Path | None = None,
) -> Catalog:
    """Open the stores and reports; never raises for a bad store (see ``Catalog.problems``).

    Args:
        patches_dir: the patch store.
        saliency_dirs: saliency stores; when empty, every subdirectory of ``saliency_root``.
        saliency_root: where to look for saliency stores when none are listed.
        reports_dir: ``reports/``: ``evaluate/<name>/all_metrics.json`` and
            ``xai_eval/<name>/ranking.json`` are shown when present.
    """
    cat = Catalog(paths={"patches": str(patches_dir)})
    try:
        cat.patches = PatchStore(patches_dir)
    except Exception as err:  # any unreadable store becomes a message, never a traceback
        cat.problems.append(Problem(str(patches_dir), _describe(err)))
    dirs = [Path(d) for d in saliency_dirs]
    if not dirs and saliency_root is not None:
        root = Path(saliency_root)
        cat.paths["saliency_root"] = str(root)
        if not root.is_dir():
            cat.problems.append(Problem(str(root), "no saliency directory (run `histoxai explain`)"))
        else:
            dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
            if not dirs:
                cat.problems.append(Problem(str(root), "no saliency stores in this directory"))
    for d in dirs:
        try:
            store = SaliencyStore(d)
            _check_against_patches(store, cat.patches)
            _ = store.meta  # read now so a broken meta.parquet is reported at start-up
        except Exception as err:
            cat.problems.append(Problem(str(d), _describe(err)))
            continue
        cat.sources[_unique(d.name, cat.sources)] = store
    _build_tables(cat)
    if reports_dir is not None:
        _load_reports(cat, Path(reports_dir))
    return cat


def _unique(name: str, taken: dict) -> str:
    out, k = name, 2
    while out in taken:
        out, k = f"{name}-{k}", k + 1
    return out


def _describe(err: Exception) -> str:
    text = str(err) or type(err).__name__
    return (
        text
        if isinstance(err, (FileNotFoundError, ValueError, KeyError))
        else f"{type(err).__name__}: {text}"
    )


def _check_against_patches(store: SaliencyStore, patches: PatchStore | None) -> None:
    if patches is None or not len(store.patch_ids):
        return
    if store.patch_ids.min() < 0 or store.patch_ids.max() >= len(patches):
        raise ValueError(
            f"patch ids up to {int(store.patch_ids.max())} but the patch store has {len(patches)} patches "
            "(explained from a different patch store?)"
        )


def _build_tables(cat: Catalog) -> None:
    per_target: dict[str, list[str]] = {}
    for name, store in cat.sources.items():
        for t in store.targets:
            per_target.setdefault(t, []).append(name)
    metas = {name: store.meta for name, store in cat.sources.items()}
    cat.samples = sorted({str(s) for m in metas.values() for s in m["sample"].unique()})
    rank = {t: i for i, t in enumerate(TARGETS)}
    pairs = sorted(
        ((name, t) for name, store in cat.sources.items() for t in store.targets),
        key=lambda p: (rank.get(p[1], len(rank)), p[1], p[0]),
    )
    for name, t in pairs:
        meta = metas[name]
        rows = meta[meta["target"] == t].sort_values("patch_id")
        if rows.empty:
            continue
        key = t if len(per_target[t]) == 1 else f"{name}:{t}"
        values = {f: rows[f].to_numpy(np.float64) for f in ("y", "y_hat", "delta", "rel_delta")}
        cat.tables[key] = TargetTable(
            key=key,
            source=name,
            target=t,
            patch_id=rows["patch_id"].to_numpy(np.int64),
            sample=pd.Categorical(rows["sample"].astype(str), categories=cat.samples).codes.astype(np.int32),
            split=pd.Categorical(rows["split"].astype(str), categories=list(SPLITS)).codes.astype(np.int8),
            values=values,
            bounds={f: _bounds(values[f]) for f in FIELDS},
            grid=rows[["patch_id", "sample", "row", "col", "split"]].reset_index(drop=True),
            sample_names=cat.samples,
            decimals=_decimals(values["y"]),
        )


def _decimals(y: np.ndarray) -> int:
    """Decimals of y: 0 for counts (all integers), else three significant digits of typical values."""
    finite = y[np.isfinite(y)]
    if finite.size and np.array_equal(finite, np.round(finite)):
        return 0
    typical = np.nanmedian(np.abs(y)) if np.isfinite(y).any() else 0.0
    return int(min(max(2 - math.floor(math.log10(typical)), 0), 6)) if typical > 0 else 3


def _bounds(x: np.ndarray) -> tuple[float, float]:
    x = x[np.isfinite(x)]
    if not x.size:
        return (0.0, 1.0)
    lo, hi = np.percentile(x, [0.5, 99.5])
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    step = nice_step(float(lo), float(hi))
    digits = max(0, -math.floor(math.log10(step)))
    return (round(math.floor(lo / step) * step, digits), round(math.ceil(hi / step) * step, digits))


def nice_step(lo: float, hi: float) -> float:
    """A power of ten giving about 100 to 1000 slider steps between ``lo`` and ``hi``."""
    return 10.0 ** math.floor(math.log10((hi - lo) / 100.0)) if hi > lo else 1.0


def _load_reports(cat: Catalog, reports: Path) -> None:
    for path in sorted(reports.glob("evaluate/*/all_metrics.json")):
        try:
            cat.metrics[path.parent.name] = _flatten(json.loads(path.read_text()))
        except (OSError, ValueError) as err:
            cat.problems.append(Problem(str(path), _describe(err)))
    for path in sorted(reports.glob("xai_eval/*/tables/per_patch_*.csv")):
        try:
            _attach_metrics(
                cat, path.parents[1].name, path.stem.removeprefix("per_patch_"), pd.read_csv(path)
            )
        except (OSError, ValueError, KeyError) as err:
            cat.problems.append(Problem(str(path), _describe(err)))
    for path in sorted(reports.glob("xai_eval/*/plots/shares_*.png")):
        cat.figures.setdefault(path.parents[1].name, []).append(path)
    for path in sorted(reports.glob("xai_eval/*/ranking.json")):
        try:
            cat.rankings[path.parent.name] = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            cat.problems.append(Problem(str(path), _describe(err)))


def _attach_metrics(cat: Catalog, source: str, target: str, frame: pd.DataFrame) -> None:
    """Per-patch metrics (long table: method, patch_id, one column per metric) onto the
    target table of ``source``; methods that are not variants of the store are skipped, and
    so are the rows of further training seeds (``seed`` column; the store is the first's)."""
    table = next((t for t in cat.tables.values() if t.source == source and t.target == target), None)
    if table is None or "patch_id" not in frame or "method" not in frame:
        return
    if "seed" in frame and len(frame):  # the store shows the first training seed's maps
        frame = frame[frame["seed"] == frame["seed"].iloc[0]]
    numeric = [
        c
        for c in frame.columns
        if c not in ("patch_id", "method", "seed") and pd.api.types.is_numeric_dtype(frame[c])
    ]
    variants = set(cat.variants(table.key))
    for method, rows in frame.groupby("method"):
        if str(method) not in variants:
            continue
        pos = table.positions(rows["patch_id"].to_numpy(np.int64))
        ok = pos >= 0
        out = {}
        for c in numeric:
            a = np.full(len(table), np.nan)
            a[pos[ok]] = rows[c].to_numpy(np.float64)[ok]
            out[c] = a
        table.metrics[str(method)] = out


def _flatten(obj: Any, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}/"))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix.rstrip("/")] = float(obj)
    return out
