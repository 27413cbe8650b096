"""Cluster bootstrap by sample (and training seed): intervals, paired comparisons, P(top).

Patches of one sample share stain, blur and tissue parameters, so they are not
independent; every interval resamples *samples* with replacement (cluster bootstrap)
and recomputes each row's mean over the patches of the drawn samples. When the maps of
several trained models (``base.seeds``) are pooled, the unit is the (training seed,
sample) cell: a draw also resamples the seeds with replacement, and a cell's weight is
its seed's count times its sample's count (:func:`cell_weights`; with one seed the
draws are exactly :func:`sample_weights`'). All rows are resampled with the same
draws, so differences between two rows are paired, and normalised scores
(s − random_res) / (oracle_res − random_res) are computed per draw.
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


def cell_weights(
    seeds: np.ndarray, samples: np.ndarray, n_boot: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster bootstrap over (training seed, sample) cells.

    A draw resamples the K distinct ``seeds`` and, independently, the S distinct
    ``samples`` with replacement; cell (k, s) weighs seed count × sample count, so a
    row's mean over a draw is over the patches of the drawn cells. The sample draws are
    those of :func:`sample_weights` (same ``seed``), the seed draws come from a stream
    of their own: with one training seed every weight is the sample count.

    Args:
        seeds: (B,) training seed of each per-patch row.
        samples: (B,) sample of each row.
        n_boot: number of draws.
        seed: ``base.seed``.

    Returns:
        (draws (n_boot, K*S) cell weights, codes (B,) cell of each row = seed index * S +
        sample index).
    """
    sample_draws, sample_codes = sample_weights(samples, n_boot, seed)
    names, seed_codes = np.unique(np.asarray(seeds), return_inverse=True)
    rng = np.random.default_rng([seed, 1])
    seed_draws = rng.multinomial(len(names), np.full(len(names), 1.0 / len(names)), size=n_boot)
    draws = seed_draws.astype(np.float64)[:, :, None] * sample_draws[:, None, :]
    return draws.reshape(n_boot, -1), seed_codes * sample_draws.shape[1] + sample_codes


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
    per_patch: pd.DataFrame, metric: str, codes: np.ndarray, draws: np.ndarray, confidence: float
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Mean (over every per-patch row), interval and bootstrap draws of ``metric`` per
    row name (``method`` column).

    Args:
        per_patch: rows with ``method`` and the metric column.
        metric: column to summarise.
        codes: (len(per_patch),) bootstrap cell of each row, in row order
            (:func:`sample_weights` or :func:`cell_weights`).
        draws: (n_boot, cells) weights of the cells.
        confidence: interval level.
    """
    rows, boots = [], {}
    codes = np.asarray(codes)
    per_patch = per_patch.reset_index(drop=True)  # the index is the row position in ``codes``
    for method, part in per_patch.groupby("method", sort=False):
        if metric not in part or not np.isfinite(part[metric].to_numpy(np.float64)).any():
            continue
        b = boot_means(part[metric].to_numpy(np.float64), codes[part.index.to_numpy()], draws)
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
