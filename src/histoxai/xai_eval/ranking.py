"""The verdict of one target: which explanation to trust, or a plain statement that
none can be named.

Rule (also written into every report, see :data:`VERDICT_RULE`):

1. One primary metric per property (declared beside the metric,
   :mod:`~histoxai.xai_eval.registry`): localisation ``mass_accuracy``, faithfulness
   ``road``, randomisation ``mprt_similarity``, robustness ``max_sensitivity``. The
   verdict reads localisation (faithfulness when the store has no ground truth).
2. Methods are ordered by P(top), the share of cluster-bootstrap draws (samples
   resampled, and training seeds where several models' maps are pooled) in which the
   method has the best primary score, then by the mean; no name order ever decides.
3. The sanity gate: a method that fails cascading randomisation (Adebayo et al. 2018;
   similarity of |map| not below the threshold at every block) cannot be named.
4. The first method that passes is the top; every passing method whose interval
   overlaps the top's is tied with it, and a tie is reported as a tie.
5. The top must reach the oracle-normalised bar, (s − random_res) / (oracle_res −
   random_res) >= ``xai_eval.normalised_bar`` at its own native resolution; otherwise
   the report says that no method clears it instead of naming one.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from histoxai.config import XaiEvalConfig
from histoxai.xai_eval import faithfulness, intervention, localisation, sanity, stability  # noqa: F401 (declare metrics)
from histoxai.xai_eval.registry import METRICS, primary
from histoxai.xai_eval.stats import overlaps

PROPERTIES: tuple[str, ...] = ("localisation", "faithfulness", "randomisation", "robustness", "intervention")

VERDICT_RULE = (
    "Primary metrics: localisation `mass_accuracy`, faithfulness `road`, randomisation `mprt_similarity`, "
    "robustness `max_sensitivity`. The verdict reads the localisation primary (faithfulness without ground "
    "truth): methods are ordered by P(top) over a cluster bootstrap of samples (of (training seed, sample) cells "
    "when several trained models' maps are pooled), then by the mean; methods that "
    "fail the randomisation sanity check cannot be named; methods whose intervals overlap the top's are a tie; "
    "the top must reach the oracle-normalised bar at its own native resolution, else no method is named."
)


def _entry(t: pd.DataFrame, m: str) -> dict:
    r = t.loc[m]
    return {k: _f(r.get(k)) for k in ("mean", "lo", "hi", "norm_mean", "norm_lo", "norm_hi", "p_top")}


def verdict(
    table: pd.DataFrame,
    rows: Mapping[str, dict],
    passes_sanity: Mapping[str, bool],
    cfg: XaiEvalConfig,
    has_truth: bool,
) -> dict:
    """The verdict of one target from its statistics table (``TargetResult.stats``).

    Returns:
        ``{"metric", "status" ("method" | "tie" | "none"), "top", "tied", "text",
        "order" (methods, best first, *without* the sanity gate), "failed_sanity",
        "properties" (family -> metric, and per method mean/interval/normalised/P(top))}``.
    """
    family = "localisation" if has_truth else "faithfulness"
    metric = primary(family)
    methods = [m for m, v in rows.items() if v["kind"] == "method"]
    out: dict = {"metric": metric.name, "sanity_threshold": cfg.sanity_threshold, "sanity_draws": cfg.sanity_draws, "status": "none", "top": None, "tied": [], "order": [], "failed_sanity": [],
                 "properties": {}}  # fmt: skip
    for prop in PROPERTIES:
        try:
            pm = primary(prop)
        except KeyError:
            continue
        t = table[table["metric"] == pm.name].set_index("method") if len(table) else pd.DataFrame()
        if len(t):
            out["properties"][prop] = {"metric": pm.name, "higher": pm.higher,
                                       "methods": {m: _entry(t, m) for m in methods if m in t.index}}  # fmt: skip
    t = table[table["metric"] == metric.name].set_index("method") if len(table) else pd.DataFrame()
    scored = [m for m in methods if m in t.index]
    if not scored:
        out["text"] = f"no method has a {metric.name} score"
        return out
    sign = -1.0 if metric.higher else 1.0
    order = sorted(
        scored,
        key=lambda m: (
            -np.nan_to_num(t.loc[m, "p_top"]),
            sign * np.nan_to_num(t.loc[m, "mean"], nan=-sign * np.inf),
        ),
    )
    out["order"] = order
    out["failed_sanity"] = [m for m in order if not passes_sanity.get(m, True)]
    # among the methods that may be named, by their own P(top) (bootstrap draws where the
    # method beats every other method that passes sanity)
    named = "p_top_named" if "p_top_named" in t.columns else "p_top"
    gated = sorted(
        (m for m in order if passes_sanity.get(m, True)),
        key=lambda m: (
            -np.nan_to_num(t.loc[m, named]),
            sign * np.nan_to_num(t.loc[m, "mean"], nan=-sign * np.inf),
        ),
    )
    if not gated:
        out["text"] = "no method passes the randomisation sanity check, so none is named"
        return out
    top = gated[0]
    ci = (t.loc[top, "lo"], t.loc[top, "hi"])
    tied = [m for m in gated[1:] if overlaps(ci, (t.loc[m, "lo"], t.loc[m, "hi"]))]
    norm = _f(t.loc[top].get("norm_mean"))
    out.update(top=top, tied=tied)
    res = "x".join(map(str, rows[top]["resolution"]))
    if has_truth and (norm is None or norm < cfg.normalised_bar):
        out["text"] = (
            f"no method clears the oracle-normalised bar of {cfg.normalised_bar:g} on {metric.name}: the best, "
            f"`{top}` ({res}), reaches {_fmt(norm)}; no explanation is named to trust"
        )
        return out
    if tied:
        out["status"] = "tie"
        out["text"] = (
            f"tie on {metric.name}: `{top}` and "
            + ", ".join(f"`{m}`" for m in tied)
            + " (overlapping intervals)"
        )
    else:
        out["status"] = "method"
        out["text"] = (
            f"`{top}` ({res}) on {metric.name}, P(top) {_fmt(_f(t.loc[top, named]))} among the "
            f"{len(gated)} method(s) that pass the sanity check"
        )
    return out


def _f(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.3g}"


__all__ = ["METRICS", "PROPERTIES", "VERDICT_RULE", "verdict"]
