"""Regression score functions: what a saliency map explains for one target head.

A classifier is explained through the logit of a class (pytorch-grad-cam's
``ClassifierOutputTarget``); a regressor has no class, so the explained scalar is a
choice. Each score function maps the head's prediction ŷ (B,) in real units and the
measured value y (B,) to the score s (B,) whose gradient the methods follow:

- ``higher``: s = ŷ: what drives the prediction up.
- ``lower``: s = −ŷ: what drives it down (gradient-based maps flip sign).
- ``target``: s = −(ŷ − y)²: what brings the prediction closer to the measured value.

Adding a score function is one entry in :data:`SCORES`.

Example:
    >>> score_fn = SCORES["target"]
    >>> score_fn(torch.tensor([1.0, 2.0]), torch.tensor([1.5, 2.0]))
    tensor([-0.2500, -0.0000])
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

ScoreFn = Callable[[Tensor, Tensor | None], Tensor]
"""``(y_hat (B,), y (B,) or None) -> score (B,)``."""


def higher(y_hat: Tensor, y: Tensor | None = None) -> Tensor:
    """The prediction itself."""
    return y_hat


def lower(y_hat: Tensor, y: Tensor | None = None) -> Tensor:
    """The negative prediction."""
    return -y_hat


def target(y_hat: Tensor, y: Tensor | None = None) -> Tensor:
    """Closeness to the measured value, −(ŷ − y)² (needs ``y``)."""
    if y is None:
        raise ValueError("score 'target' needs the measured values y")
    return -((y_hat - y.to(y_hat.dtype)) ** 2)


SCORES: dict[str, ScoreFn] = {"higher": higher, "lower": lower, "target": target}


def head_score(
    model: torch.nn.Module, head: int, score_fn: ScoreFn
) -> Callable[[Tensor, Tensor | None], Tensor]:
    """``f(images, y) -> (B,)``: ``score_fn`` of output column ``head``, in float32.

    The form captum's ``forward_func`` expects, with ``y`` passed as an additional
    forward argument so that captum expands it along with the inputs.
    """

    def forward(images: Tensor, y: Tensor | None = None) -> Tensor:
        return score_fn(model(images)[:, head].float(), y)

    return forward
