"""Localisation against ground-truth masks: does a map point at the features that truly
drive the target?

In the phantom the targets are generated from known structures (``MASK_CLASSES``):
the nuclei count from nuclei, MD from nuclei and air (free water), FA from the
elongated, aligned nuclei. :data:`TRUTH_CLASSES` names them per target.

Relevance: by default (``relevance="magnitude"``) a pixel's relevance is |map|. Input
gradients of "higher prediction" are *negative* on dark nuclei (brightening a nucleus
lowers the count), so a signed gradient map that points exactly at the nuclei would
look anti-localised; CAMs are non-negative anyway. ``relevance="signed"`` scores the
raw map instead (positive = supports a higher prediction). Mass metrics count the
positive part of the relevance; ranking metrics (rank accuracy, pointing game, AUROC)
use its order. Ties are scored by their expectation under random tie-breaking, and a
map without positive mass counts as uniform, so flat maps (e.g. a Grad-CAM of a
1x1 final feature map) score exactly chance instead of being dropped or rewarded.

Quantus 0.6 ``RelevanceMassAccuracy``, ``RelevanceRankAccuracy``, ``PointingGame`` and
``AUC`` take precomputed (x, y, a, s) arrays and never call the model, so they accept
our regression targets; :func:`quantus_localisation` runs them (``backend="quantus"``).
The torch versions here give the same numbers on maps without ties (tests check
equality), batched on the maps' device. Written by hand because Quantus lacks them:
shares of attribution on other classes (distractors), the tie and flat-map
conventions above (rows where they matter are scored here), flat maps (Quantus
refuses a batch of all-0 or all-1 maps) and empty masks (Quantus' pointing game fails
casting NaN into its boolean result).
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

    A map without positive mass points nowhere in particular: it is treated as uniform
    and scores the region's area share (dropping it instead would bias the mean towards
    the patches where the method happens to fire). With ``region`` the truth mask this
    is the relevance mass accuracy (Arras et al. 2022, eq. 1).
    """
    pos = flat(maps).clamp_min(0.0)
    r = flat(region)
    inside = (pos * r).sum(dim=1)
    total = pos.sum(dim=1)
    return torch.where(total > 0, inside / total.clamp_min(1e-300), r.mean(dim=1))


def mass_accuracy(maps: Tensor, truth: Tensor) -> Tensor:
    """Relevance mass accuracy: positive mass inside the truth mask / total (NaN for an
    empty mask)."""
    empty = flat(truth).sum(dim=1) == 0
    return _nan_where(mass_share(maps, truth), empty)


def rank_accuracy(maps: Tensor, truth: Tensor) -> Tensor:
    """Relevance rank accuracy (Arras et al. 2022, eq. 2): of the K most relevant pixels,
    K = mask size, the fraction inside the mask.

    Pixels tied with the K-th value share the remaining slots in proportion (the
    expected score under random tie-breaking; a constant map scores the area share).
    """
    a, s = flat(maps), flat(truth) > 0
    k = s.sum(dim=1)
    kth = a.sort(dim=1, descending=True).values.gather(1, (k - 1).clamp_min(0)[:, None])  # (B, 1)
    above, tied = a > kth, a == kth
    slots = (k - above.sum(dim=1)).double()
    hits = (above & s).sum(dim=1) + slots * (tied & s).sum(dim=1) / tied.sum(dim=1).clamp_min(1)
    return _nan_where(hits.double() / k.clamp_min(1).double(), k == 0)


def pointing_game(maps: Tensor, truth: Tensor) -> Tensor:
    """Pointing game (Zhang et al. 2018): 1 when the maximum of the map lies in the mask.

    Tied maxima count by the fraction of them inside the mask (the expected hit under
    random tie-breaking), so a constant map scores the area share. Quantus instead
    counts any tied maximum inside the mask as a hit, which makes a constant map hit
    whenever the mask is non-empty.
    """
    a, s = flat(maps), flat(truth) > 0
    top = a == a.amax(dim=1, keepdim=True)
    hit = (top & s).sum(dim=1).double() / top.sum(dim=1).double()
    return _nan_where(hit, s.sum(dim=1) == 0)


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


def relevance(maps: Tensor, mode: str = "magnitude") -> Tensor:
    """Pixel relevance of raw maps: ``magnitude`` (|map|) or ``signed`` (the map)."""
    if mode == "magnitude":
        return maps.abs()
    if mode == "signed":
        return maps
    raise ValueError(f"relevance {mode!r}: expected 'magnitude' or 'signed'")


def localisation_scores(
    maps: Tensor, masks: Tensor, target: str, backend: str = "torch", relevance_mode: str = "magnitude"
) -> dict[str, Tensor]:
    """All localisation metrics of ``maps`` (B, H, W) against store ``masks`` (B, H, W).

    Args:
        maps: raw saliency maps.
        masks: label masks (``MASK_CLASSES`` values).
        target: the explained target; picks the truth classes.
        backend: ``torch`` (batched, on the maps' device) or ``quantus`` (Quantus 0.6
            for the four metrics it has; distractor share is always torch).
        relevance_mode: ``magnitude`` or ``signed`` (see :func:`relevance`).

    Returns:
        Metric name -> (B,) float64 CPU tensor (NaN where undefined).
    """
    masks = masks.to(maps.device)
    maps = relevance(maps, relevance_mode)
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
    regression targets pass as dummy zeros. ``abs`` and ``normalise`` are off: the
    mass metric gets the positive part, the ranking metrics the map itself. Empty
    masks are NaN; maps with tied values at the decision points (flat maps, maps
    without positive mass) are re-scored by this module's conventions (see the module
    docstring), because Quantus' answer there depends on the array order.
    """
    import quantus

    a = maps.detach().cpu().double().numpy()[:, None]  # (B, 1, H, W)
    s = truth.detach().cpu().numpy()[:, None].astype(np.float64)
    x = np.zeros((a.shape[0], 3, *a.shape[2:]), dtype=np.float64)
    y = np.zeros(a.shape[0], dtype=np.int64)
    keep = s.reshape(len(s), -1).sum(axis=1) > 0
    kwargs = {"disable_warnings": True, "abs": False, "normalise": False}
    metrics = {
        "mass_accuracy": (quantus.RelevanceMassAccuracy(**kwargs), np.clip(a, 0, None), mass_accuracy),
        "rank_accuracy": (quantus.RelevanceRankAccuracy(**kwargs), a, rank_accuracy),
        "pointing_game": (quantus.PointingGame(**kwargs), a, pointing_game),
        "auroc": (quantus.AUC(**kwargs), a, auroc),  # ties: average ranks, as here
    }
    flat_a = a.reshape(len(a), -1)
    flat = np.ptp(flat_a, axis=1) == 0  # Quantus refuses batches of all-0 or all-1 maps
    top_tied = (flat_a == flat_a.max(axis=1, keepdims=True)).sum(axis=1) > 1
    no_mass = np.clip(flat_a, 0, None).sum(axis=1) == 0
    kth_tied = _kth_tied(flat_a, s.reshape(len(s), -1).sum(axis=1).astype(int))
    ours_instead = {"mass_accuracy": no_mass | flat, "rank_accuracy": kth_tied, "pointing_game": top_tied}
    out = {}
    for name, (metric, a_in, ours) in metrics.items():
        scores = np.full(len(a), np.nan)
        fix = keep & (ours_instead.get(name, flat) | flat)
        send = keep & ~fix
        if send.any():
            with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
                warnings.simplefilter("ignore")
                got = metric(
                    model=None, x_batch=x[send], y_batch=y[send], a_batch=a_in[send], s_batch=s[send],
                    channel_first=True,
                )  # fmt: skip
            scores[send] = np.asarray(got, dtype=np.float64)
        if fix.any():
            scores[fix] = (
                (ours or auroc)(maps[torch.from_numpy(fix)], truth[torch.from_numpy(fix)]).cpu().numpy()
            )
        out[name] = scores
    return out


def _kth_tied(a: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Rows whose k-th largest value is tied with another value."""
    desc = -np.sort(-a, axis=1)
    kth = desc[np.arange(len(a)), np.clip(k - 1, 0, a.shape[1] - 1)]
    return (a == kth[:, None]).sum(axis=1) > 1
