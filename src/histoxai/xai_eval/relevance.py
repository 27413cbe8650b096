"""The one relevance rule of the XAI evaluation.

A regression saliency map is signed: positive values support a *higher* score. The
score a store explains is ``higher`` (s = ŷ), ``lower`` (s = −ŷ) or ``target``
(s = −(ŷ − y)²); relevance for "what raises the prediction" is therefore the map for
``higher`` and ``target`` and the negated map for ``lower``. Localisation,
faithfulness, tissue shares and per-nucleus tables all read this signed relevance;
|map| exists only as an explicitly named extra row ``<variant>|abs``.
"""

from __future__ import annotations

from torch import Tensor

SIGN: dict[str, float] = {"higher": 1.0, "lower": -1.0, "target": 1.0}
"""Score function -> sign that turns its maps into relevance for a higher prediction."""

ABS_SUFFIX = "|abs"


def score_sign(score: str) -> float:
    """+1 or −1 for a score function name."""
    if score not in SIGN:
        raise ValueError(f"score function {score!r}: expected one of {sorted(SIGN)}")
    return SIGN[score]


def relevance(maps: Tensor, score: str, variant: str = "") -> Tensor:
    """Signed relevance of raw maps (B, H, W); |map| for ``<variant>|abs`` rows."""
    if variant.endswith(ABS_SUFFIX):
        return maps.abs()
    return maps * score_sign(score)


def is_abs(variant: str) -> bool:
    return variant.endswith(ABS_SUFFIX)


def base_variant(variant: str) -> str:
    """The stored variant behind a row name (``sg|abs`` -> ``sg``)."""
    return variant[: -len(ABS_SUFFIX)] if is_abs(variant) else variant
