"""One explained model end to end: read the stores and the model, evaluate every
target, return the results and facts for the report (``histoxai xai-eval``)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from histoxai.config import Config, XaiEvalConfig
from histoxai.errors import InputError
from histoxai.xai_eval import inputs
from histoxai.xai_eval.relevance import base_variant, score_sign
from histoxai.xai_eval.resolution import native_resolution
from histoxai.xai_eval.stability import variant_pairs
from histoxai.xai_eval.suite import TargetResult, evaluate_target, pool_seeds

if TYPE_CHECKING:
    from histoxai.data.store import PatchStore
    from histoxai.explain.store import SaliencyStore


def evaluate_saliency(
    cfg: Config, saliency: str | Path, checkpoint: str | None = None, progress: bool = True
) -> tuple[dict[str, TargetResult], dict]:
    """Evaluate the maps of one saliency directory: its maps (the registered model's)
    and those of each further training seed's model in ``seeds/<seed>/``, pooled
    (:func:`~histoxai.xai_eval.suite.pool_seeds`).

    Returns:
        (target -> :class:`TargetResult`, info: model, store and run facts for the report).
    """
    from histoxai.data.store import PatchStore
    from histoxai.explain.store import SaliencyStore
    from histoxai.models import load_checkpoint
    from histoxai.xai_eval.tissue import labels_from_colour, labels_from_masks

    x, seed = cfg.xai_eval, cfg.base.seed
    sal = SaliencyStore(saliency)
    sal.verify()
    store = PatchStore(cfg.base.patches_dir)  # verifies itself
    inputs.check_patch_size(sal, store)
    device = torch.device(
        "cuda" if x.device == "cuda" or (x.device == "auto" and torch.cuda.is_available()) else "cpu"
    )
    model, info = inputs.load_model(sal, checkpoint, cfg)
    # NHWC: the same numbers (up to float rounding), ~2x the forward throughput on CPU
    model = model.to(device).eval().to(memory_format=torch.channels_last)

    ids = inputs.select_patches(sal.patch_ids, x.max_patches, seed)
    missing = ids[ids >= len(store)]
    if missing.size:
        raise InputError(f"{sal.root}: patch id {int(missing[0])} is not in the patch store {store.root}")
    samples = store.index["sample"].to_numpy()[ids].astype(str)
    raw_images = store.images(ids)
    images = torch.from_numpy(raw_images).permute(0, 3, 1, 2).float().div(255.0).to(device)
    labels = (labels_from_masks(store.masks(ids)) if store.has_masks
              else labels_from_colour(raw_images, x.nuclei_threshold or None, x.air_brightness))  # fmt: skip
    cue = inputs.shortcut_cue(store, ids, x.shortcut)
    score = sal.manifest.get("score", cfg.explain.score)
    pairs = variant_pairs(sal.variants)
    records = _ablations(store, ids, samples, x.intervention_patches, x.intervention_objects, seed)

    run = Run(x, seed, store, ids, samples, images, labels, cue, score, pairs, records, device, progress)
    further = inputs.seed_stores(sal, checkpoint)
    first = int((further[0][1].manifest.get("seeds") or [seed])[0]) if further else cfg.base.seed_list()[0]
    per_seed = {first: evaluate_model(run, sal, model, checks=True)}
    for train_seed, sub, path in further:  # the same patches, targets and methods (seed_stores)
        sub_model = load_checkpoint(path, seed=train_seed)
        sub_model = sub_model.to(device).eval().to(memory_format=torch.channels_last)
        per_seed[train_seed] = evaluate_model(run, sub, sub_model, checks=False)
    results = {
        t: pool_seeds({s: r[t] for s, r in per_seed.items()}, run.size, x, seed, run.truths[t] is not None)
        for t in per_seed[first]
    }
    if not results:
        raise ValueError(
            f"{sal.root}: no target of the model {tuple(model.targets)} has complete saliency maps"
        )
    source = next((t.source for t in run.truths.values() if t is not None), None)
    info = {
        "model": info.get("name"), "model_version": info.get("version"), "model_uri": info.get("uri"),
        "run_id": info.get("run_id"), "saliency": str(sal.root), "patch store": str(store.root),
        "patches": f"{len(ids)} of {len(sal.patch_ids)} explained, {len(set(samples))} samples",
        "score explained": score, "relevance": "signed (negated for score 'lower')" + (", plus |map| rows" if x.magnitude_variants else ""),
        "device": str(device), "seed": seed,
        "ground truth": f"signed, from the phantom's formulas ({source})" if source else "none (tissue classes by colour deconvolution)",
        "intervention": f"{len({r[0] for r in records})} patches re-rendered" if records else "not run",
        "seeds": ", ".join(map(str, per_seed)),
        "intervals and P(top)": _uncertainty(list(per_seed), cfg.base.seed_list()),
    }  # fmt: skip
    return results, info


@dataclass
class Run:
    """What every trained model's maps are scored on: the settings, the patches and the
    checks' inputs (one per ``evaluate_saliency`` call; ``truths`` filled per target)."""

    cfg: XaiEvalConfig
    seed: int
    store: PatchStore
    ids: np.ndarray
    samples: np.ndarray
    images: torch.Tensor
    labels: np.ndarray
    cue: np.ndarray | None
    score: str
    pairs: list
    records: list
    device: torch.device
    progress: bool
    truths: dict = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.images.shape[-2:])


def evaluate_model(
    run: Run, maps_of: SaliencyStore, net: torch.nn.Module, checks: bool
) -> dict[str, TargetResult]:
    """Every target of one trained model's maps, with the randomisation sanity check
    (every trained model's: the verdict's gate must hold whichever seed was trained);
    ``checks``: also robustness, interventions, the variant agreement and the shortcut
    report (the first seed's model only: each re-explains or re-renders)."""
    from histoxai.xai_eval.truth import load_truth

    x, ids = run.cfg, run.ids
    results: dict[str, TargetResult] = {}
    rows = maps_of.rows(ids)
    for target in [t for t in maps_of.targets if t in net.targets]:
        variants = [v for v in maps_of.variants if maps_of.is_complete(target, v)]
        if not variants:
            print(f"xai-eval: warning: no complete maps for target {target} in {maps_of.root}; skipped")
            continue
        head = net.targets.index(target)
        meta = maps_of.meta[maps_of.meta["target"] == target].set_index("patch_id").reindex(ids)
        y = meta["y"].to_numpy(np.float64)
        if target not in run.truths:
            run.truths[target] = load_truth(run.store, ids, target)
        res = {
            v: native_resolution(maps_of, v, maps_of.variants[v], net, run.size, run.device) for v in variants
        }
        effects = None
        if run.records and checks:
            from histoxai.xai_eval.intervention import object_effects

            scorer = _scorer(net, head, score_sign(run.score))
            effects = object_effects(run.records, scorer, run.device, x.batch_size)
        explain_for = partial(_explainer_for, maps_of.variants, head, run.score, y, run.seed)
        results[target] = evaluate_target(
            net, target, run.images, {v: maps_of.read(target, v, rows) for v in variants},
            patch_ids=ids, samples=run.samples, y=y, y_hat=meta["y_hat"].to_numpy(np.float64),
            labels=run.labels, score=run.score, resolutions=res,
            cfg=x if checks else replace(x, robustness_patches=0), seed=run.seed,
            truth=run.truths[target], explain_for=explain_for,
            shortcut_cue=run.cue if checks else None,
            variant_pairs=[p for p in run.pairs if p[0] in variants and p[1] in variants] if checks else [],
            effects=effects, progress=run.progress,
        )  # fmt: skip
    return results


def _explainer_for(
    variants: dict, head: int, score: str, y: np.ndarray, seed: int, variant: str, pos: np.ndarray
):
    """The explainer of ``variant`` (its ``|abs`` row: the base variant's) on rows ``pos``."""
    return inputs.explainer(variants[base_variant(variant)], head, score, y[pos], seed)


def _uncertainty(pooled: list[int], configured: tuple[int, ...]) -> str:
    """What the intervals and P(top) vary over: samples, and the training seeds whose
    models' maps are pooled (``pooled``, the registered model's first)."""
    if len(pooled) > 1:
        return (
            f"cluster bootstrap over (training seed, sample) cells: each draw resamples the {len(pooled)} "
            f"trained models (seeds {pooled}) and the samples with replacement; means over every seed's "
            f"scored patches. The randomisation sanity check runs on every seed's model and a method "
            f"passes only if it passes on each; robustness and intervention checks, the curves, tissue "
            f"shares, nuclei, variant agreement and shortcut tables are of the first seed's model "
            f"(seed {pooled[0]}) only"
        )
    text = f"cluster bootstrap of samples over the scored patches of one trained model (seed {pooled[0]})"
    if len(configured) > 1:
        text += (
            f"; base.seeds is {list(configured)} but the saliency directory holds one model's maps "
            "(`histoxai explain` of a training output explains every seed into seeds/<seed>/)"
        )
    return text


def _scorer(model, head: int, sign: float):
    def score(x: torch.Tensor) -> torch.Tensor:
        return sign * model(x)[:, head].float()

    return score


def _ablations(store, ids: np.ndarray, samples: np.ndarray, n: int, per_kind: int, seed: int) -> list:
    """Ablation records of ``n`` stratified patches, or [] when the store cannot make them."""
    if n <= 0:
        return []
    try:
        from histoxai.data import phantom_truth
    except ImportError:
        return []
    if not hasattr(phantom_truth, "ablate") or not getattr(store, "has_instances", False):
        return []
    pick = ids[inputs.stratified(samples, n, seed)]
    return list(phantom_truth.ablate(store.root, pick, seed, max_objects=per_kind))
