"""Localisation against the signed ground truth (:mod:`histoxai.xai_eval.truth`): does a
map's relevance point at the content that raises the target?

All metrics read *signed relevance* (:mod:`histoxai.xai_eval.relevance`); the
localisation region is where the truth is positive (counted nuclei for cc, air for md,
aligned nuclei for fa). Mass metrics count the positive part of the relevance; ranking
metrics (rank accuracy, pointing game, AUROC) use its order. Ties are scored by their
expectation under random tie-breaking, and a map without positive mass counts as
uniform, so flat maps score exactly chance.

Object level (counted nuclei, from the truth's instance mask): the hit rate (share of
counted nuclei whose positive mass exceeds their uniform share, i.e. their pixel
share), the evenness of mass across counted nuclei (normalised entropy), and the mass
on uncounted nuclei and on distractors. ``signed_corr`` is the per-patch Pearson
correlation between relevance and the signed truth (sign and magnitude agreement).

Quantus' ``RelevanceMassAccuracy``, ``RelevanceRankAccuracy``, ``PointingGame`` and
``AUC`` agree with these on maps without ties; a test compares them. Quantus is not
called at run time.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from histoxai.xai_eval.registry import declare
from histoxai.xai_eval.similarity import average_ranks, flat, pearson

MASS = declare("mass_accuracy", "localisation", higher=True, primary=True, normalised=True)
RANK = declare("rank_accuracy", "localisation", higher=True, normalised=True)
POINT = declare("pointing_game", "localisation", higher=True)
AUROC = declare("auroc", "localisation", higher=True, normalised=True)
SIGNED = declare("signed_corr", "localisation", higher=True, normalised=True)
DISTRACTOR = declare("distractor_share", "localisation", higher=False)
UNCOUNTED = declare("uncounted_share", "localisation", higher=False)
HIT = declare("nucleus_hit_rate", "localisation", higher=True, normalised=True)
EVEN = declare("nucleus_evenness", "localisation", higher=True)


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


def nucleus_mass(rel: Tensor, instances: Tensor) -> list[Tensor]:
    """Positive relevance mass per counted nucleus, one (k_b,) tensor per patch (ids
    1..k_b; mass of id j at position j − 1) and the share of the patch's mass."""
    pos = flat(rel).clamp_min(0.0)
    inst = instances.reshape(len(instances), -1).long().to(pos.device)
    out = []
    for b in range(len(pos)):
        k = int(inst[b].max()) if inst[b].numel() else 0
        out.append(torch.bincount(inst[b], weights=pos[b], minlength=k + 1)[1:])
    return out


def object_scores(rel: Tensor, instances: Tensor) -> dict[str, Tensor]:
    """Hit rate and evenness of positive mass over counted nuclei, (B,) each (NaN
    without counted nuclei; evenness needs two)."""
    pos = flat(rel).clamp_min(0.0)
    total = pos.sum(dim=1)
    inst = instances.reshape(len(instances), -1).long().to(pos.device)
    n = inst.shape[1]
    hit, even = (
        torch.full((len(pos),), float("nan"), dtype=torch.float64),
        torch.full((len(pos),), float("nan"), dtype=torch.float64),
    )
    for b, mass in enumerate(nucleus_mass(rel, instances)):
        area = torch.bincount(inst[b], minlength=len(mass) + 1)[1:].double()
        present = area > 0
        if not present.any():
            continue
        share = mass / total[b] if total[b] > 0 else area / n  # no positive mass: uniform
        hit[b] = float((share[present] > area[present] / n).double().mean())
        if int(present.sum()) >= 2:
            p = (
                mass[present] / mass[present].sum()
                if mass[present].sum() > 0
                else area[present] / area[present].sum()
            )
            ent = -(p * torch.log(p.clamp_min(1e-300))).sum()
            even[b] = float(ent / np.log(int(present.sum())))
    return {HIT: hit, EVEN: even}


def signed_corr(rel: Tensor, signed: Tensor) -> Tensor:
    """Pearson correlation of relevance with the signed truth per patch, (B,); NaN when
    the truth is flat."""
    a, s = flat(rel), flat(signed)
    return _nan_where(pearson(a, s), s.std(dim=1) == 0)


def localisation_scores(rel: Tensor, truth, rows: slice | np.ndarray = slice(None)) -> dict[str, Tensor]:
    """All localisation metrics of relevance maps (B, H, W) against a
    :class:`~histoxai.xai_eval.truth.Truth` (``rows`` selects its patches).

    Returns:
        Metric name -> (B,) float64 CPU tensor (NaN where undefined).
    """
    dev = rel.device

    def t(x):
        return torch.as_tensor(np.asarray(x[rows])).to(dev)

    region = t(truth.region)
    out = {
        MASS: mass_accuracy(rel, region),
        RANK: rank_accuracy(rel, region),
        POINT: pointing_game(rel, region),
        AUROC: auroc(rel, region),
        SIGNED: signed_corr(rel, t(truth.signed)),
        DISTRACTOR: mass_share(rel, t(truth.distractor)),
    }
    if truth.target == "cc":
        out[UNCOUNTED] = mass_share(rel, t(truth.uncounted))
        out.update(object_scores(rel, t(truth.instances)))
    return {k: v.detach().cpu().double() for k, v in out.items()}
