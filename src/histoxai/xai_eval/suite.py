"""Run every metric family on one target's maps: the library side of ``histoxai xai-eval``.

:func:`evaluate_target` takes tensors and callables (no files, no config file), so it
runs the same on a tiny test model and on the pipeline's regressor. Two baseline maps
run through every metric beside the methods: ``random`` (fresh uniform noise at every
call: chance level) and ``sobel`` (an edge detector: a model-independent map).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from histoxai.xai_eval.faithfulness import baseline_images, faithfulness_scores, random_maps, sobel_maps
from histoxai.xai_eval.localisation import localisation_scores, relevance
from histoxai.xai_eval.sanity import ExplainFn, randomisation_cascade, sanity_summary
from histoxai.xai_eval.shortcut import shortcut_report
from histoxai.xai_eval.stability import noise_stability, variant_agreement
from histoxai.xai_eval.tissue import TISSUE_CLASSES, binned_shares, class_shares

BASELINES: tuple[str, ...] = ("random", "sobel")


@dataclass(frozen=True)
class SuiteSettings:
    """Knobs of :func:`evaluate_target` (mirrors ``XaiEvalConfig``).

    ``relevance``: how localisation and faithfulness read a map, ``magnitude`` (|map|)
    or ``signed`` (see :mod:`histoxai.xai_eval.localisation`); tissue shares always use
    the positive part of the raw map, the shortcut check always |map|.
    """

    steps: int = 10
    baseline: str = "blur"
    blur_sigma_px: float = 5.0
    road_noise_sd: float = 0.01
    batch_size: int = 32
    localisation_backend: str = "torch"
    relevance: str = "magnitude"
    sanity_patches: int = 8
    sanity_threshold: float = 0.5
    stability_patches: int = 8
    stability_noise_sd: float = 0.02
    stability_copies: int = 3
    n_bins: int = 4
    shortcut_band_px: int = 2
    seed: int = 0


@dataclass
class TargetResult:
    """Everything measured for one target.

    Attributes:
        summary: one row per method and baseline, one column per metric (means).
        per_patch: one row per (method, patch): patch_id, y, abs_delta and per-patch metrics.
        curves: method -> curve name -> mean curve (steps + 1,) of |Δŷ|.
        cascade: method -> step -> {"rank_corr", "ssim"} mean similarity.
        shares: method -> {"attribution": class -> share, "area": class -> share}.
        binned: method -> {"target": table, "error": table} (:func:`binned_shares`).
        agreement: one row per pair of variants of the same method.
        shortcut: border-band report (:func:`shortcut_report`) or None.
        passes_sanity: method -> passed the randomisation check.
    """

    target: str
    summary: pd.DataFrame
    per_patch: pd.DataFrame
    curves: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    cascade: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    shares: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    binned: dict[str, dict[str, pd.DataFrame]] = field(default_factory=dict)
    agreement: pd.DataFrame = field(default_factory=pd.DataFrame)
    shortcut: pd.DataFrame | None = None
    passes_sanity: dict[str, bool] = field(default_factory=dict)

    @property
    def methods(self) -> list[str]:
        return [m for m in self.summary.index if m not in BASELINES]


def _random_explainer(seed: int) -> ExplainFn:
    generator = torch.Generator().manual_seed(seed)

    def explain(model: nn.Module, images: Tensor) -> Tensor:
        return random_maps((images.shape[0], *images.shape[-2:]), generator, images.device)

    return explain


def _sobel_explainer(model: nn.Module, images: Tensor) -> Tensor:
    return sobel_maps(images)


def evaluate_target(
    model: nn.Module,
    target: str,
    images: Tensor,
    maps: Mapping[str, Tensor],
    *,
    patch_ids: np.ndarray,
    y: np.ndarray,
    y_hat: np.ndarray,
    labels: Tensor,
    masks: Tensor | None = None,
    explain_fns: Mapping[str, ExplainFn] | None = None,
    variant_pairs: list[tuple[str, str]] = (),
    shortcut_cue: np.ndarray | None = None,
    settings: SuiteSettings = SuiteSettings(),
    progress: bool = True,
) -> TargetResult:
    """Measure the maps of every method variant for one target head.

    Args:
        model: the regressor (eval mode), on its device.
        target: target name; must be in ``model.targets``.
        images: (B, 3, H, W) float in [0, 1] on the model's device.
        maps: variant name -> (B, H, W) stored maps of these patches.
        patch_ids, y, y_hat: (B,) per patch (for tables and binning).
        labels: (B, H, W) ``TISSUE_CLASSES`` labels.
        masks: (B, H, W) store masks for localisation, or None (no ground truth).
        explain_fns: variant name -> re-explaining callable, for sanity and stability
            (variants without one skip those checks). They are called with the first
            ``sanity_patches`` / ``stability_patches`` of ``images`` (or noisy copies).
        variant_pairs: pairs of variant names to compare (same method, other params).
        shortcut_cue: (B,) border cue strength; when given the shortcut report is made.
        settings: :class:`SuiteSettings`.
        progress: show progress bars.
    """
    s = settings
    targets = tuple(getattr(model, "targets", ()))
    if target not in targets:
        raise ValueError(f"target {target!r} is not an output of the model (targets {targets})")
    head = targets.index(target)
    device = images.device
    generator = torch.Generator().manual_seed(s.seed)

    def predict(x: Tensor) -> Tensor:
        return model(x)[:, head].float()

    shape = (images.shape[0], *images.shape[-2:])
    all_maps: dict[str, Tensor] = {}
    for name, m in maps.items():
        all_maps[name] = torch.as_tensor(np.asarray(m, dtype=np.float32)).to(device)
        if tuple(all_maps[name].shape) != shape:
            raise ValueError(
                f"maps of {target}/{name} have shape {tuple(all_maps[name].shape)}, expected {shape}"
            )
    all_maps["random"] = random_maps(shape, generator, device)
    all_maps["sobel"] = sobel_maps(images)
    fns: dict[str, ExplainFn] = {
        **(explain_fns or {}),
        "random": _random_explainer(s.seed + 1),
        "sobel": _sobel_explainer,
    }

    result = TargetResult(target, pd.DataFrame(), pd.DataFrame())
    abs_delta = np.abs(np.asarray(y_hat, dtype=np.float64) - np.asarray(y, dtype=np.float64))
    rows, frames = {}, []
    for name, m in tqdm(all_maps.items(), desc=f"xai-eval {target}", disable=not progress, leave=False):
        parts: dict[str, list[Tensor]] = {}
        curve_parts: dict[str, list[Tensor]] = {}
        for i in range(0, len(images), s.batch_size):
            x = images[i : i + s.batch_size]
            base = baseline_images(x, s.baseline, s.blur_sigma_px)
            scores, curves = faithfulness_scores(
                predict,
                x,
                relevance(m[i : i + s.batch_size], s.relevance),
                base,
                s.steps,
                s.road_noise_sd,
                s.batch_size * 4,
                generator,
            )
            for k, v in scores.items():
                parts.setdefault(k, []).append(v.cpu())
            for k, v in curves.items():
                curve_parts.setdefault(k, []).append(v)
        per = {k: torch.cat(v) for k, v in parts.items()}
        if masks is not None:
            per.update(localisation_scores(m, masks, target, s.localisation_backend, s.relevance))
        result.curves[name] = {k: torch.cat(v).nanmean(dim=0).numpy() for k, v in curve_parts.items()}
        share, area = class_shares(m, labels)
        result.shares[name] = {
            "attribution": dict(zip(TISSUE_CLASSES, share.nanmean(dim=0).tolist())),
            "area": dict(zip(TISSUE_CLASSES, area.mean(dim=0).tolist())),
        }
        result.binned[name] = {
            "target": binned_shares(share.numpy(), y, s.n_bins, "target_bin"),
            "error": binned_shares(share.numpy(), abs_delta, s.n_bins, "error_bin"),
        }
        frame = pd.DataFrame({k: v.numpy() for k, v in per.items()})
        for c, cls in enumerate(TISSUE_CLASSES):
            frame[f"share_{cls}"] = share[:, c].numpy()
        frame.insert(0, "method", name)
        frame.insert(1, "patch_id", np.asarray(patch_ids))
        frame.insert(2, "y", np.asarray(y, dtype=np.float64))
        frame.insert(3, "abs_delta", abs_delta)
        frames.append(frame)
        rows[name] = {k: float(v.nanmean()) for k, v in per.items()}
        rows[name]["empty_maps"] = float((m.flatten(1).clamp_min(0).sum(dim=1) == 0).double().mean())
        rows[name].update({f"share_{cls}": result.shares[name]["attribution"][cls] for cls in TISSUE_CLASSES})

        fn = fns.get(name)
        if fn is not None and s.stability_patches > 0:
            sub = images[: s.stability_patches]
            stab = noise_stability(model, sub, fn, s.stability_noise_sd, s.stability_copies, s.seed)
            rows[name].update({k: float(v.nanmean()) for k, v in stab.items()})
        if fn is not None and s.sanity_patches > 0:
            cascade = randomisation_cascade(model, images[: s.sanity_patches], fn, s.seed)
            result.cascade[name] = {
                step: {k: float(v.nanmean()) for k, v in sims.items()} for step, sims in cascade.items()
            }
            summary = sanity_summary(cascade, s.sanity_threshold)
            rows[name].update(summary)
            result.passes_sanity[name] = bool(summary["sanity_pass"])

    result.summary = pd.DataFrame.from_dict(rows, orient="index")
    result.per_patch = pd.concat(frames, ignore_index=True)
    result.agreement = pd.DataFrame(
        [
            {
                "a": a,
                "b": b,
                **{k: float(v.nanmean()) for k, v in variant_agreement(all_maps[a], all_maps[b]).items()},
            }
            for a, b in variant_pairs
            if a in all_maps and b in all_maps
        ]
    )
    if shortcut_cue is not None:
        result.shortcut = shortcut_report(all_maps, s.shortcut_band_px, shortcut_cue)
    for k in [p for p in result.passes_sanity if p in BASELINES]:
        result.passes_sanity.pop(k)
    return result
