"""The models' R² for the Main page: from the evaluation report's ``all_metrics.json``
(``test/r2_md``, ``baseline/test/r2_md``, ``sample/<s>/<in|out>/r2_md``, ``ceiling/r2_md``;
the sample-mean shortcut's ``samplemean/…`` is left to the report) or, without a report,
from the explained patches' y and ŷ."""

from __future__ import annotations

import numpy as np
import pandas as pd

SPLIT_ORDER = {"train": 0, "val": 1, "test": 2, "out": 3}


def r2_tables(metrics: dict[str, float]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per split, per sample) R² tables from flat metric names (NaN where absent).

    Per split: rows are splits (and ``ceiling``), columns targets, with the baseline's
    R² as ``<t> (baseline)``. Per sample: rows are samples, columns ``<t> <in|out>``.
    """
    splits: dict[str, dict[tuple, float]] = {}
    samples: dict[str, dict[tuple, float]] = {}
    targets: list[str] = []
    for key, value in metrics.items():
        scope, _, name = key.rpartition("/")
        if not name.startswith("r2_") or not scope or scope.startswith("samplemean/"):
            continue
        target = name[3:]
        targets += [target] if target not in targets else []
        baseline = scope.startswith("baseline/")
        parts = scope.removeprefix("baseline/").split("/")
        if parts[0] == "sample" and len(parts) >= 2:
            if not baseline:
                samples.setdefault(parts[1], {})[(target, "/".join(parts[2:]))] = value
        else:
            splits.setdefault("/".join(parts), {})[(target, baseline)] = value

    def frame(rows: dict, label) -> pd.DataFrame:
        cols = sorted({c for r in rows.values() for c in r}, key=lambda c: (targets.index(c[0]), c[1]))
        df = pd.DataFrame([[r.get(c, np.nan) for c in cols] for r in rows.values()], index=list(rows))
        df.columns = [label(c) for c in cols]
        return order_rows(df)

    return (
        frame(splits, lambda c: f"{c[0]} (baseline)" if c[1] else c[0]),
        frame(samples, lambda c: f"{c[0]} {c[1]}".strip()),
    )


def r2_from_meta(meta: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per split, per sample) R² of the explained patches (meta rows of a saliency store)."""
    splits: dict[str, dict[str, float]] = {}
    samples: dict[str, dict[str, float]] = {}
    for target, rows in meta.groupby("target", sort=False):
        for split, g in rows.groupby("split", sort=True):
            splits.setdefault(str(split), {})[str(target)] = r2(g["y"].to_numpy(), g["y_hat"].to_numpy())
        for sample, g in rows.groupby("sample", sort=True):
            samples.setdefault(str(sample), {})[str(target)] = r2(g["y"].to_numpy(), g["y_hat"].to_numpy())
    return (
        order_rows(pd.DataFrame.from_dict(splits, orient="index")),
        pd.DataFrame.from_dict(samples, orient="index"),
    )


def order_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Splits in pipeline order (train, val, test, out), anything else after."""
    return df.loc[sorted(df.index, key=lambda s: (SPLIT_ORDER.get(str(s), 9), str(s)))] if len(df) else df


def r2(y: np.ndarray, y_hat: np.ndarray) -> float:
    """Coefficient of determination, NaN for fewer than two finite pairs or constant y."""
    ok = np.isfinite(y) & np.isfinite(y_hat)
    y, y_hat = y[ok], y_hat[ok]
    ss_tot = float(((y - y.mean()) ** 2).sum()) if y.size > 1 else 0.0
    return 1.0 - float(((y - y_hat) ** 2).sum()) / ss_tot if ss_tot > 0 else float("nan")
