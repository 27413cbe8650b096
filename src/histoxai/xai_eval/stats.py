"""Cluster bootstrap by sample: intervals, paired comparisons, P(top), the verdict.

Patches of one sample share stain, blur and tissue parameters, so they are not
independent; every interval resamples *samples* with replacement (cluster bootstrap)
and recomputes each row's mean over the patches of the drawn samples. All rows are
resampled with the same draws, so differences between two rows are paired, and
normalised scores (s − random_res) / (oracle_res − random_res) are computed per draw.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd


def sample_weights(samples: np.ndarray, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(draws (n_boot, S) counts of each sample, codes (B,) sample index per patch)."""
    names, codes = np.unique(np.asarray(samples).astype(str), return_inverse=True)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(len(names), np.full(len(names), 1.0 / len(names)), size=n_boot)
    return draws.astype(np.float64), codes


def boot_means(values: np.ndarray, codes: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Bootstrap means (n_boot,) of per-patch ``values`` (NaN ignored)."""
    values = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(values)
    s = np.bincount(codes[ok], weights=values[ok], minlength=draws.shape[1])
    c = np.bincount(codes[ok], minlength=draws.shape[1]).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (draws @ s) / (draws @ c)


def interval(boot: np.ndarray, confidence: float) -> tuple[float, float]:
    """Percentile interval of bootstrap values (NaN draws dropped)."""
    b = boot[np.isfinite(boot)]
    if not b.size:
        return (float("nan"), float("nan"))
    a = (1 - confidence) / 2
    return float(np.quantile(b, a)), float(np.quantile(b, 1 - a))


def normalised(score: np.ndarray, random: np.ndarray, oracle: np.ndarray) -> np.ndarray:
    """(s − random) / (oracle − random); NaN where oracle and random agree (to 1e-6
    relative): at a resolution where even the truth scores chance nothing can be read."""
    span = oracle - random
    scale = np.maximum(np.abs(oracle), np.abs(random)) + 1e-300
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(np.abs(span) > 1e-6 * scale, (score - random) / span, np.nan)


def p_top(boots: Mapping[str, np.ndarray], higher: bool) -> dict[str, float]:
    """Share of bootstrap draws in which each row is the best (ties split evenly)."""
    names = list(boots)
    if not names:
        return {}
    m = np.stack([boots[n] for n in names])  # (R, n_boot)
    m = np.where(np.isfinite(m), m, -np.inf if higher else np.inf)
    best = m.max(axis=0) if higher else m.min(axis=0)
    top = (m == best[None]).astype(np.float64)
    top /= top.sum(axis=0, keepdims=True)
    return {n: float(v) for n, v in zip(names, top.mean(axis=1))}


def paired(boot_a: np.ndarray, boot_b: np.ndarray, confidence: float) -> dict[str, float]:
    """Interval of the paired difference a − b and the share of draws with a > b."""
    d = boot_a - boot_b
    lo, hi = interval(d, confidence)
    ok = np.isfinite(d)
    return {"diff": float(np.nanmean(d)) if ok.any() else float("nan"), "lo": lo, "hi": hi,
            "p_greater": float((d[ok] > 0).mean()) if ok.any() else float("nan")}  # fmt: skip


def summarise(
    per_patch: pd.DataFrame, metric: str, codes_of: Mapping[int, int], draws: np.ndarray, confidence: float
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Mean, interval and bootstrap draws of ``metric`` per row (``method`` column).

    Args:
        per_patch: rows with ``method``, ``patch_id`` and the metric column.
        metric: column to summarise.
        codes_of: patch id -> sample code.
        draws: (n_boot, S) sample counts (:func:`sample_weights`).
        confidence: interval level.
    """
    rows, boots = [], {}
    for method, part in per_patch.groupby("method", sort=False):
        if metric not in part or not np.isfinite(part[metric].to_numpy(np.float64)).any():
            continue
        codes = np.array([codes_of[int(p)] for p in part["patch_id"]])
        b = boot_means(part[metric].to_numpy(np.float64), codes, draws)
        boots[method] = b
        lo, hi = interval(b, confidence)
        rows.append({"method": method, "mean": float(np.nanmean(part[metric])), "lo": lo, "hi": hi,
                     "n": int(np.isfinite(part[metric].to_numpy(np.float64)).sum())})  # fmt: skip
    return pd.DataFrame(rows), boots


def overlaps(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether two intervals overlap (NaN intervals never do)."""
    if not all(np.isfinite([*a, *b])):
        return False
    return a[0] <= b[1] and b[0] <= a[1]
