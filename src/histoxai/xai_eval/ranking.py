"""Rank the saliency methods of one target and pick the one to trust.

Rule (also written into every report, see :data:`RANKING_RULE`):

1. Every metric in :data:`RANKED_METRICS` that at least one method has a value for is
   used. Per metric, methods are ranked 1 (best) .. n in the metric's direction (ties
   share their average rank).
2. A method that does not beat the random-map baseline on a metric (strictly better in
   the metric's direction; a missing value never beats it) gets rank n + 1 on it
   instead: failing to beat chance is never rewarded, and dropping the metric (which
   would let a method that fails most metrics score well on the one it passes) is not
   done either.
3. A method's score is the mean of its ranks over the used metrics (lower is better).
4. Methods that fail the randomisation sanity check (their maps barely change when the
   model is randomised) are placed after all methods that pass, whatever their score;
   the first method of the order is the one to trust.

The sanity metrics are not ranked themselves: a fresh random map changes completely
between calls, so "beating random" is impossible there; they act as the gate of step 4.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

METRICS: dict[str, tuple[str, bool]] = {
    "mass_accuracy": ("localisation", True),
    "rank_accuracy": ("localisation", True),
    "pointing_game": ("localisation", True),
    "auroc": ("localisation", True),
    "distractor_share": ("localisation", False),
    "deletion_auc": ("faithfulness", True),
    "insertion_auc": ("faithfulness", False),
    "road_morf_auc": ("faithfulness", True),
    "road_lerf_auc": ("faithfulness", False),
    "road": ("faithfulness", True),
    "noise_rank_corr": ("stability", True),
    "noise_ssim": ("stability", True),
    "sanity_rank_corr": ("sanity", False),
    "sanity_ssim": ("sanity", False),
    "sanity_final_rank_corr": ("sanity", False),
    "sanity_pass": ("sanity", True),
    "empty_maps": ("maps", False),
}
"""Metric -> (family, higher is better)."""

RANKED_METRICS: tuple[str, ...] = (
    "mass_accuracy",
    "rank_accuracy",
    "pointing_game",
    "auroc",
    "distractor_share",
    "deletion_auc",
    "insertion_auc",
    "road",
    "noise_rank_corr",
)
"""Metrics that enter the score (one per idea: ``road`` stands for its two curves,
``noise_rank_corr`` for stability)."""

RANKING_RULE = (
    "Per metric ({metrics}), methods are ranked 1 (best) to n in the metric's direction; "
    "a method that does not beat the random-map baseline on a metric gets rank n + 1 there. "
    "The score is the mean rank over the metrics (lower is better). Methods that fail the "
    "randomisation sanity check (mean Spearman rho between maps of the trained and the fully "
    "randomised model >= the threshold) come after all that pass. The first method is the one to trust."
).format(metrics=", ".join(RANKED_METRICS))


def beats(value: float, baseline: float, higher_is_better: bool) -> bool:
    """Whether ``value`` is strictly better than ``baseline`` (NaN value: never; NaN
    baseline: any finite value)."""
    if not np.isfinite(value):
        return False
    if not np.isfinite(baseline):
        return True
    return value > baseline if higher_is_better else value < baseline


def rank_methods(
    table: pd.DataFrame,
    random: Mapping[str, float],
    passes_sanity: Mapping[str, bool] | None = None,
    edges: Mapping[str, float] | None = None,
) -> list[dict]:
    """Order the methods of one target by :data:`RANKING_RULE`.

    Args:
        table: one row per method (index: method/variant name), columns: metric means.
        random: metric -> value of the random-map baseline.
        passes_sanity: method -> passed the randomisation check (missing: not run,
            treated as passed).
        edges: metric -> value of the edge-detector baseline (reported as
            ``beats_edges``, not used in the score).

    Returns:
        Ordered list of ``{"method", "rank", "score", "passes_sanity", "sanity_checked",
        "beats_random", "beats_edges", "n_metrics", "ranks", "metrics"}`` (best first).
    """
    passes_sanity = dict(passes_sanity or {})
    methods = list(table.index)
    n = len(methods)
    used = [m for m in RANKED_METRICS if m in table.columns and table[m].notna().any()]
    ranks = pd.DataFrame(index=methods, columns=used, dtype=np.float64)
    won = pd.DataFrame(False, index=methods, columns=used)
    for metric in used:
        higher = METRICS[metric][1]
        values = table[metric].astype(np.float64)
        ranks[metric] = values.rank(ascending=not higher, method="average", na_option="bottom")
        base = float(random.get(metric, np.nan))
        won[metric] = [beats(float(v), base, higher) for v in values]
        ranks.loc[~won[metric], metric] = n + 1
    score = ranks.mean(axis=1) if used else pd.Series(np.nan, index=methods)
    rows = []
    for method in methods:
        rows.append(
            {
                "method": method,
                "score": _float(score[method]),
                "passes_sanity": bool(passes_sanity.get(method, True)),
                "sanity_checked": method in passes_sanity,
                "beats_random": int(won.loc[method].sum()),
                "beats_edges": int(
                    sum(
                        beats(float(table.loc[method, m]), float((edges or {}).get(m, np.nan)), METRICS[m][1])
                        for m in used
                    )
                ),
                "n_metrics": len(used),
                "ranks": {m: float(ranks.loc[method, m]) for m in used},
                "metrics": {c: _float(table.loc[method, c]) for c in table.columns},
            }
        )
    rows.sort(
        key=lambda r: (not r["passes_sanity"], np.inf if r["score"] is None else r["score"], r["method"])
    )
    for i, row in enumerate(rows, start=1):
        row["rank"] = i
    return rows


def _float(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None
