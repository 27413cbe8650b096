"""Shared fixtures: the repo root and a tiny patch store built from plain arrays."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from histoxai.data.store import PatchStore, SampleBlock, write_store

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
IN_CI = os.environ.get("CI", "").lower() == "true"


def require(condition: bool, reason: str) -> None:
    """Skip when ``condition`` fails locally; fail in CI, where everything must run."""
    if not condition:
        if IN_CI:
            pytest.fail(f"required in CI: {reason}")
        pytest.skip(reason)


@pytest.fixture(autouse=True)
def _isolate_mlflow():
    """Restore MLflow's process-wide state after each test: its tracking/registry URIs (which
    ``mlflow.set_tracking_uri`` also copies into ``os.environ``) and the active run, so one
    test's server or store never leaks into the next."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
    yield
    import sys

    if "mlflow" in sys.modules:
        import mlflow
        from mlflow.tracking._model_registry import utils as registry_utils
        from mlflow.tracking._tracking_service import utils as tracking_utils

        while mlflow.active_run() is not None:
            mlflow.end_run()
        tracking_utils._tracking_uri = None
        registry_utils._registry_uri = None
    for key in [k for k in os.environ if k.startswith("MLFLOW_")]:
        del os.environ[key]
    os.environ.update(saved)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


def make_blocks(n_samples: int = 2, grid: int = 4, size: int = 16, seed: int = 0) -> list[SampleBlock]:
    """Blocks whose patch (r, c) of sample k has pixel value 10*k + r + c and md = r + c."""
    rng = np.random.default_rng(seed)
    blocks = []
    for k in range(n_samples):
        rows, cols = np.divmod(np.arange(grid * grid), grid)
        images = np.broadcast_to(
            (10 * k + rows + cols).astype(np.uint8)[:, None, None, None], (grid * grid, size, size, 3)
        )
        masks = rng.integers(0, 4, size=(grid * grid, size, size), dtype=np.uint8)
        table = pd.DataFrame(
            {"row": rows, "col": cols, "md": (rows + cols).astype(float), "cc": rows.astype(float)}
        )
        nuclei = pd.DataFrame({"offset": [0, grid * grid - 1], "cx": [1.0, 2.0], "cy": [3.0, 4.0]})
        blocks.append(SampleBlock(f"s{k + 1}", images.copy(), table, masks, {"nuclei": nuclei}))
    return blocks


@pytest.fixture
def tiny_store(tmp_path) -> PatchStore:
    return write_store(tmp_path / "patches", make_blocks(), {"source": "test"})
