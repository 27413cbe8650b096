"""One explained model end to end: read the stores and the model, evaluate every
target, return the results and facts for the report (``histoxai xai-eval``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from histoxai.config import Config
from histoxai.errors import InputError
from histoxai.xai_eval import inputs
from histoxai.xai_eval.relevance import score_sign
from histoxai.xai_eval.resolution import native_resolution
from histoxai.xai_eval.stability import variant_pairs
from histoxai.xai_eval.suite import TargetResult, evaluate_target


def evaluate_saliency(
    cfg: Config, saliency: str | Path, checkpoint: str | None = None, progress: bool = True
) -> tuple[dict[str, TargetResult], dict]:
    """Evaluate the maps of one saliency directory.

    Returns:
        (target -> :class:`TargetResult`, info: model, store and run facts for the report).
    """
    from histoxai.data.store import PatchStore
    from histoxai.explain.store import SaliencyStore
    from histoxai.xai_eval.tissue import labels_from_colour, labels_from_masks
    from histoxai.xai_eval.truth import load_truth

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
    rows = sal.rows(ids)
    samples = store.index["sample"].to_numpy()[ids].astype(str)
    raw_images = store.images(ids)
    images = torch.from_numpy(raw_images).permute(0, 3, 1, 2).float().div(255.0).to(device)
    labels = (labels_from_masks(store.masks(ids)) if store.has_masks
              else labels_from_colour(raw_images, x.nuclei_threshold or None, x.air_brightness))  # fmt: skip
    cue = inputs.shortcut_cue(store, ids, x.shortcut)
    score = sal.manifest.get("score", cfg.explain.score)
    pairs = variant_pairs(sal.variants)
    size = tuple(images.shape[-2:])
    records = _ablations(store, ids, samples, x.intervention_patches, x.intervention_objects, seed)

    results: dict[str, TargetResult] = {}
    truths = {}
    for target in [t for t in sal.targets if t in model.targets]:
        variants = [v for v in sal.variants if sal.is_complete(target, v)]
        if not variants:
            print(f"xai-eval: warning: no complete maps for target {target} in {sal.root}; skipped")
            continue
        head = model.targets.index(target)
        meta = sal.meta[sal.meta["target"] == target].set_index("patch_id").reindex(ids)
        y = meta["y"].to_numpy(np.float64)
        truth = truths[target] = load_truth(store, ids, target)
        res = {v: native_resolution(sal, v, sal.variants[v], model, size, device) for v in variants}

        def explain_for(variant: str, pos: np.ndarray, _head=head, _y=y):
            from histoxai.xai_eval.relevance import base_variant

            return inputs.explainer(sal.variants[base_variant(variant)], _head, score, _y[pos], seed)

        effects = None
        if records:
            from histoxai.xai_eval.intervention import object_effects

            effects = object_effects(records, _scorer(model, head, score_sign(score)), device, x.batch_size)
        results[target] = evaluate_target(
            model, target, images, {v: sal.read(target, v, rows) for v in variants},
            patch_ids=ids, samples=samples, y=y, y_hat=meta["y_hat"].to_numpy(np.float64), labels=labels,
            score=score, resolutions=res, cfg=x, seed=seed, truth=truth, explain_for=explain_for,
            variant_pairs=[p for p in pairs if p[0] in variants and p[1] in variants], shortcut_cue=cue,
            effects=effects, progress=progress,
        )  # fmt: skip
    if not results:
        raise ValueError(
            f"{sal.root}: no target of the model {tuple(model.targets)} has complete saliency maps"
        )
    source = next((t.source for t in truths.values() if t is not None), None)
    info = {
        "model": info.get("name"), "model_version": info.get("version"), "model_uri": info.get("uri"),
        "run_id": info.get("run_id"), "saliency": str(sal.root), "patch store": str(store.root),
        "patches": f"{len(ids)} of {len(sal.patch_ids)} explained, {len(set(samples))} samples",
        "score explained": score, "relevance": "signed (negated for score 'lower')" + (", plus |map| rows" if x.magnitude_variants else ""),
        "device": str(device), "seed": seed,
        "ground truth": f"signed, from the phantom's formulas ({source})" if source else "none (tissue classes by colour deconvolution)",
        "intervention": f"{len({r[0] for r in records})} patches re-rendered" if records else "not run",
        "intervals and P(top)": _uncertainty(cfg.base.seed_list()),
    }  # fmt: skip
    return results, info


def _uncertainty(seeds: tuple[int, ...]) -> str:
    """What the intervals and P(top) vary over: patches (by sample), not training seeds."""
    text = "cluster bootstrap of samples over the scored patches of one trained model"
    if len(seeds) > 1:
        text += (
            f" (the first of base.seeds {list(seeds)}; the other seeds' models are not explained or pooled)"
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
