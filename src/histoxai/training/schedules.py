"""Learning-rate schedules as plain functions of (fractional) epoch.

``cosine``: linear warmup from ``initial_lr`` to ``warmup_target_lr`` over
``warmup_epochs``, then ``lr = target * (1 + cos(pi * t / decay_epochs)) / 2`` for
``t`` epochs after warmup, and 0 after ``decay_epochs`` (the Keras ``CosineDecay`` with
``warmup_target``, used by the published model: 17 warmup + 60 decay epochs,
1e-5 -> 5e-5). ``none``: constant ``lr``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from histoxai.config import TrainConfig


def cosine_with_warmup(
    epoch: float, initial_lr: float, warmup_target_lr: float, warmup_epochs: float, decay_epochs: float
) -> float:
    """Learning rate at ``epoch`` (fractional: ``epoch + step / steps_per_epoch``)."""
    if epoch < warmup_epochs:
        return initial_lr + (warmup_target_lr - initial_lr) * epoch / warmup_epochs
    peak = warmup_target_lr if warmup_epochs > 0 else initial_lr
    if decay_epochs <= 0:
        return peak
    t = min(epoch - warmup_epochs, decay_epochs)
    return peak * 0.5 * (1 + math.cos(math.pi * t / decay_epochs))


def lr_schedule(cfg: TrainConfig) -> Callable[[float], float]:
    """The fine-tuning learning rate as a function of fractional epoch."""
    if cfg.schedule == "none":
        return lambda epoch: cfg.lr
    if cfg.schedule == "cosine":
        return lambda epoch: cosine_with_warmup(
            epoch, cfg.initial_lr, cfg.warmup_target_lr, cfg.warmup_epochs, cfg.decay_epochs
        )
    raise ValueError(f"train.schedule={cfg.schedule!r}: expected 'none' or 'cosine'")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr
