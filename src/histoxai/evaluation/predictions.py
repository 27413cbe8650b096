"""Reading and checking the training stage's ``predictions.parquet`` and ``run.json``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from histoxai.data.store import SPLITS, PatchStore
from histoxai.errors import InputError, MissingInputError

ID_COLUMNS: tuple[str, ...] = ("patch_id", "sample", "row", "col", "split")


def prediction_targets(pred: pd.DataFrame) -> list[str]:
    """Targets with both ``y_<t>`` and ``yhat_<t>`` columns, in column order."""
    return [c[5:] for c in pred.columns if c.startswith("yhat_") and f"y_{c[5:]}" in pred.columns]


def load_predictions(path: str | Path, targets: Sequence[str] | None = None) -> pd.DataFrame:
    """Load and validate a predictions file (one row per patch, see the pipeline contract).

    Args:
        path: ``predictions.parquet``.
        targets: targets that must be present (default: all found).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unreadable file, missing columns, unknown split values or no rows.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"predictions file {path} does not exist (run `histoxai train` first)")
    try:
        pred = pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several types for a corrupt file
        raise InputError(f"predictions file {path} is not a readable Parquet file: {err}") from err
    missing = [c for c in ID_COLUMNS if c not in pred.columns]
    if missing:
        raise InputError(
            f"predictions file {path} lacks columns {missing}; expected {list(ID_COLUMNS)} + y_<t>, yhat_<t>"
        )
    found = prediction_targets(pred)
    wanted = list(targets) if targets else found
    absent = [t for t in wanted if t not in found]
    if absent or not wanted:
        raise InputError(
            f"predictions file {path} lacks y_<t>/yhat_<t> columns for targets {absent or '(any)'}; "
            f"found targets {found}"
        )
    if pred.empty:
        raise InputError(f"predictions file {path} has no rows")
    bad = sorted(set(pred["split"].astype(str)) - set(SPLITS))
    if bad:
        raise InputError(f"predictions file {path}: unknown split values {bad}; expected {list(SPLITS)}")
    pred = pred.copy()
    pred["split"] = pred["split"].astype(str)
    pred["sample"] = pred["sample"].astype(str)
    return pred


def load_run_info(path: str | Path) -> dict:
    """``run.json`` of a training output, or ``{}`` when it does not exist."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"run file {path} is not valid JSON: {err}") from err
    if not isinstance(info, dict):
        raise InputError(f"run file {path}: expected a JSON object, got {type(info).__name__}")
    return info


def check_against_store(pred: pd.DataFrame, store: PatchStore, path: str | Path) -> None:
    """Fail when the predictions do not belong to the patches of ``store``."""
    ids = pred["patch_id"].to_numpy(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= len(store)):
        raise InputError(
            f"predictions file {path} has patch ids outside 0..{len(store) - 1} of store {store.root}; "
            "was the store re-prepared after training?"
        )
    index = store.index.iloc[ids]
    same = (
        (index["sample"].astype(str).to_numpy() == pred["sample"].to_numpy())
        & (index["row"].to_numpy() == pred["row"].to_numpy())
        & (index["col"].to_numpy() == pred["col"].to_numpy())
    )
    if not same.all():
        first = int(ids[~same][0])
        raise InputError(
            f"predictions file {path} does not match store {store.root} (patch {first} differs in "
            "sample/row/col); was the store re-prepared after training?"
        )
