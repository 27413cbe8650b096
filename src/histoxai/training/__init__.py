"""Training: fit loop, LR schedules, metrics, batched augmentations, stain handling."""

from histoxai.training.fit import FitResult, NonFiniteTrainingError, evaluate, fit, predict
from histoxai.training.metrics import TargetMetrics, metric_name, regression_metrics
from histoxai.training.schedules import cosine_with_warmup, lr_schedule

__all__ = [
    "FitResult",
    "NonFiniteTrainingError",
    "TargetMetrics",
    "cosine_with_warmup",
    "evaluate",
    "fit",
    "lr_schedule",
    "metric_name",
    "predict",
    "regression_metrics",
]
