"""Regression metrics per target, named ``split/metric_target`` (``val/r2_md``).

Computed with torchmetrics in real units (not standardised); patches whose target is
NaN are left out of that target's metrics. Every metric state is a sum, so ranks of a
data-parallel job add their :meth:`TargetMetrics.state` vectors (one all-reduce) and get
the metrics of all their patches together; torchmetrics' own synchronisation (one
collective per state, on the default process group) is switched off.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torchmetrics import ExplainedVariance, MeanAbsoluteError, MeanSquaredError, MetricCollection, R2Score

# r2: 1 - SS_res/SS_tot; ev: explained variance 1 - var(y - ŷ)/var(y), the thesis' R² (Eq. 3.2)
METRICS: dict[str, type] = {
    "r2": R2Score,
    "ev": ExplainedVariance,
    "mse": MeanSquaredError,
    "mae": MeanAbsoluteError,
}


def metric_name(split: str, metric: str, target: str) -> str:
    """``split/metric_target``, the name used in MLflow, reports and the dashboard."""
    return f"{split}/{metric}_{target}"


class TargetMetrics:
    """Accumulates R² (``r2``), explained variance (``ev``), MSE and MAE per target over batches.

    Example:
        >>> m = TargetMetrics(["md", "fa"])
        >>> m.update(yhat, y)          # (B, 2) each
        >>> m.compute("val")           # {"val/r2_md": ..., "val/mse_md": ..., ...}
    """

    def __init__(self, targets: Sequence[str]):
        self.targets = tuple(targets)
        self.metrics = {
            t: MetricCollection({k: cls(sync_on_compute=False) for k, cls in METRICS.items()})
            for t in self.targets
        }
        self.counts = dict.fromkeys(self.targets, 0)

    def update(self, yhat: torch.Tensor, y: torch.Tensor) -> None:
        """Add a batch: ``yhat`` and ``y`` are (B, T) in the order of ``targets``."""
        yhat, y = yhat.detach().float().cpu(), y.detach().float().cpu()
        for j, t in enumerate(self.targets):
            keep = ~torch.isnan(y[:, j])
            if keep.any():
                self.metrics[t].update(yhat[keep, j], y[keep, j])
                self.counts[t] += int(keep.sum())

    def _states(self) -> list[tuple[object, str, torch.Tensor]]:
        return [
            (metric, name, value)
            for t in self.targets
            for metric in self.metrics[t].values()
            for name, value in sorted(metric.metric_state.items())
        ]

    def state(self) -> torch.Tensor:
        """Everything added so far as one float64 vector of sums (counts first): the
        vectors of disjoint sets of patches add up to the vector of their union."""
        counts = torch.tensor([float(self.counts[t]) for t in self.targets], dtype=torch.float64)
        return torch.cat([counts, *(v.detach().double().reshape(-1) for _, _, v in self._states())])

    def load_state(self, vector: torch.Tensor) -> None:
        """Replace the sums by ``vector`` (a :meth:`state`, e.g. summed over ranks), before
        :meth:`compute`."""
        vector, states = vector.detach().cpu(), self._states()
        want = len(self.targets) + sum(v.numel() for _, _, v in states)
        if len(vector) != want:
            raise ValueError(f"metric state of {len(vector)} values, expected {want}")
        self.counts = {t: int(round(float(c))) for t, c in zip(self.targets, vector[: len(self.targets)])}
        at = len(self.targets)
        for metric, name, value in states:
            part = vector[at : at + value.numel()].reshape(value.shape)
            setattr(metric, name, part.to(value.dtype).to(value.device))
            at += value.numel()

    def compute(self, split: str) -> dict[str, float]:
        """Metrics of everything added so far (NaN for a target with fewer than 2 values)."""
        out = {}
        for t in self.targets:
            with warnings.catch_warnings():  # states loaded by load_state count as updated
                warnings.filterwarnings("ignore", "The ``compute`` method of metric", UserWarning)
                values = self.metrics[t].compute() if self.counts[t] >= 2 else {}
            for k in METRICS:
                out[metric_name(split, k, t)] = float(values[k]) if k in values else float("nan")
        return out


def regression_metrics(
    yhat: np.ndarray, y: np.ndarray, targets: Sequence[str], split: str
) -> dict[str, float]:
    """One-shot :class:`TargetMetrics` on (N, T) arrays."""
    m = TargetMetrics(targets)
    if len(y):
        m.update(
            torch.as_tensor(np.asarray(yhat, dtype=np.float32)),
            torch.as_tensor(np.asarray(y, dtype=np.float32)),
        )
    return m.compute(split)
