"""Localisation against ground-truth masks: does a map point at the features that truly
drive the target?

In the phantom the targets are generated from known structures (``MASK_CLASSES``):
the nuclei count from nuclei, MD from nuclei and air (free water), FA from the
elongated, aligned nuclei. :data:`TRUTH_CLASSES` names them per target.

Conventions: the ranking metrics (rank accuracy, pointing game, AUROC) use the raw
signed map (larger = more relevant); the mass metrics (mass accuracy, shares) use its
positive part, the attribution that drives the explained score up (Kohlbrenner et al.
2020 likewise count only positive relevance). A map with no positive mass has no mass
accuracy (NaN).

Quantus 0.6 ``RelevanceMassAccuracy``, ``RelevanceRankAccuracy``, ``PointingGame`` and
``AUC`` take precomputed (x, y, a, s) arrays and never call the model, so they accept
our regression targets; :func:`quantus_localisation` runs them (``backend="quantus"``).
The torch versions here give the same numbers (tests check equality) batched on the
maps' device, and add what Quantus lacks: shares of attribution on other classes
(distractors) and the handling of empty masks (Quantus' pointing game fails casting
NaN into its boolean result when a mask is empty).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor

from histoxai.data.store import MASK_CLASSES
from histoxai.xai_eval.similarity import average_ranks, flat

TRUTH_CLASSES: dict[str, tuple[str, ...]] = {
    "cc": ("nuclei",),
    "md": ("nuclei", "air"),
    "fa": ("nuclei",),
    "faip": ("nuclei",),
}
"""Mask classes whose pixels truly drive each target in the phantom."""

LOCALISATION_METRICS: tuple[str, ...] = (
    "mass_accuracy",
    "rank_accuracy",
    "pointing_game",
    "auroc",
    "distractor_share",
)


def class_mask(masks: Tensor, classes: tuple[str, ...]) -> Tensor:
    """(B, H, W) bool: pixels whose label is one of ``classes`` (``MASK_CLASSES`` names)."""
    unknown = set(classes) - set(MASK_CLASSES)
    if unknown:
        raise ValueError(f"unknown mask classes {sorted(unknown)}; expected names from {MASK_CLASSES}")
    out = torch.zeros(masks.shape, dtype=torch.bool, device=masks.device)
    for name in classes:
        out |= masks == MASK_CLASSES.index(name)
    return out


def truth_mask(masks: Tensor, target: str) -> Tensor:
    """(B, H, W) bool: the ground-truth features of ``target`` (:data:`TRUTH_CLASSES`)."""
    if target not in TRUTH_CLASSES:
        raise ValueError(
            f"no ground-truth classes for target {target!r}; expected one of {sorted(TRUTH_CLASSES)}"
        )
    return class_mask(masks, TRUTH_CLASSES[target])


def _nan_where(values: Tensor, empty: Tensor) -> Tensor:
    return torch.where(empty, torch.full_like(values, float("nan")), values)


def mass_share(maps: Tensor, region: Tensor) -> Tensor:
    """Share of the positive attribution mass that falls in ``region``, (B,) float64.

    NaN where a map has no positive mass. With ``region`` the truth mask this is the
    relevance mass accuracy (Arras et al. 2022, eq. 1).
    """
    pos = flat(maps).clamp_min(0.0)
    inside = (pos * flat(region)).sum(dim=1)
    total = pos.sum(dim=1)
    return _nan_where(inside / total.clamp_min(1e-300), total <= 0)


def mass_accuracy(maps: Tensor, truth: Tensor) -> Tensor:
    """Relevance mass accuracy: positive mass inside the truth mask / total (NaN for an
    empty mask or a map without positive mass)."""
    empty = flat(truth).sum(dim=1) == 0
    return _nan_where(mass_share(maps, truth), empty)


def rank_accuracy(maps: Tensor, truth: Tensor) -> Tensor:
    """Relevance rank accuracy (Arras et al. 2022, eq. 2): of the K most relevant pixels,
    K = mask size, the fraction inside the mask."""
    a, s = flat(maps), flat(truth) > 0
    k = s.sum(dim=1)
    order = a.argsort(dim=1, descending=True, stable=True)
    hits = s.gather(1, order) & (torch.arange(a.shape[1], device=a.device)[None] < k[:, None])
    return _nan_where(hits.sum(dim=1).double() / k.clamp_min(1).double(), k == 0)


def pointing_game(maps: Tensor, truth: Tensor) -> Tensor:
    """Pointing game (Zhang et al. 2018): 1 when a maximum of the map lies in the mask.

    Ties follow Quantus: any of the tied maxima inside the mask is a hit (so a constant
    map hits whenever the mask is non-empty; the random-map baseline shows the chance
    level).
    """
    a, s = flat(maps), flat(truth) > 0
    top = a == a.amax(dim=1, keepdim=True)
    return _nan_where((top & s).any(dim=1).double(), s.sum(dim=1) == 0)


def auroc(maps: Tensor, truth: Tensor) -> Tensor:
    """Area under the ROC curve of the map as a pixel classifier of the mask, (B,).

    Mann-Whitney U from average ranks (ties count one half), equal to scikit-learn's
    ``roc_auc_score``; 0.5 is chance, 1 a map whose every mask pixel outranks every
    other pixel. NaN when the mask is empty or covers the whole patch.
    """
    a, s = flat(maps), flat(truth)
    n_pos = s.sum(dim=1)
    n_neg = s.shape[1] - n_pos
    rank_sum = (average_ranks(a) * s).sum(dim=1)
    u = rank_sum - n_pos * (n_pos + 1) / 2
    return _nan_where(u / (n_pos * n_neg).clamp_min(1), (n_pos == 0) | (n_neg == 0))


def localisation_scores(
    maps: Tensor, masks: Tensor, target: str, backend: str = "torch"
) -> dict[str, Tensor]:
    """All localisation metrics of ``maps`` (B, H, W) against store ``masks`` (B, H, W).

    Args:
        maps: raw signed saliency maps.
        masks: label masks (``MASK_CLASSES`` values).
        target: the explained target; picks the truth classes.
        backend: ``torch`` (batched, on the maps' device) or ``quantus`` (Quantus 0.6
            for the four metrics it has; distractor share is always torch).

    Returns:
        Metric name -> (B,) float64 CPU tensor (NaN where undefined).
    """
    masks = masks.to(maps.device)
    truth = truth_mask(masks, target)
    if backend == "torch":
        out = {
            "mass_accuracy": mass_accuracy(maps, truth),
            "rank_accuracy": rank_accuracy(maps, truth),
            "pointing_game": pointing_game(maps, truth),
            "auroc": auroc(maps, truth),
        }
    elif backend == "quantus":
        out = {k: torch.from_numpy(v) for k, v in quantus_localisation(maps, truth).items()}
    else:
        raise ValueError(f"localisation backend {backend!r}: expected 'torch' or 'quantus'")
    out["distractor_share"] = mass_share(maps, class_mask(masks, ("distractor",)))
    return {k: v.detach().cpu().double() for k, v in out.items()}


def quantus_localisation(maps: Tensor, truth: Tensor) -> dict[str, np.ndarray]:
    """Quantus 0.6 localisation metrics on precomputed maps (no model call).

    Quantus takes (x, y, a, s) batches; ``y`` is only checked for shape, so the
    regression targets pass as dummy zeros. ``abs`` and ``normalise`` are off so that
    the conventions of this module hold: the mass metric gets the positive part, the
    ranking metrics the raw map. Empty masks are set to NaN here (see module docstring).
    """
    import quantus

    a = maps.detach().cpu().double().numpy()[:, None]  # (B, 1, H, W)
    s = truth.detach().cpu().numpy()[:, None].astype(np.float64)
    x = np.zeros((a.shape[0], 3, *a.shape[2:]), dtype=np.float64)
    y = np.zeros(a.shape[0], dtype=np.int64)
    empty = s.reshape(len(s), -1).sum(axis=1) == 0
    keep = ~empty
    kwargs = {"disable_warnings": True, "abs": False, "normalise": False}
    metrics = {
        "mass_accuracy": (quantus.RelevanceMassAccuracy(**kwargs), np.clip(a, 0, None)),
        "rank_accuracy": (quantus.RelevanceRankAccuracy(**kwargs), a),
        "pointing_game": (quantus.PointingGame(**kwargs), a),
        "auroc": (quantus.AUC(**kwargs), a),
    }
    out = {}
    for name, (metric, a_in) in metrics.items():
        scores = np.full(len(a), np.nan)
        if keep.any():
            with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
                warnings.simplefilter("ignore")
                got = metric(
                    model=None,
                    x_batch=x[keep],
                    y_batch=y[keep],
                    a_batch=a_in[keep],
                    s_batch=s[keep],
                    channel_first=True,
                )
            scores[keep] = np.asarray(got, dtype=np.float64)
        out[name] = scores
    return out
