"""Run every metric family on one target's maps: the library side of ``histoxai xai-eval``.

:func:`evaluate_target` takes tensors, callables and the typed ``XaiEvalConfig`` (no
files), so it runs the same on a tiny test model and on the pipeline's regressor.

Rows: every stored method variant (signed relevance, :mod:`~histoxai.xai_eval.relevance`;
``<variant>|abs`` too with ``magnitude_variants``) and permanent reference rows:
``sobel`` (edges), ``darkness`` (1 − grey), ``random`` (pixel noise) and ``oracle``
(the full-resolution signed truth), and per native resolution r of a method
``random@r`` and ``oracle@r`` (:mod:`~histoxai.xai_eval.resolution`). Each method's
normalised score reads the references of its own resolution.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from histoxai.config import XaiEvalConfig
from histoxai.xai_eval import intervention, nuclei, stats
from histoxai.xai_eval.faithfulness import baseline_images, darkness_maps, faithfulness_scores, sobel_maps
from histoxai.xai_eval.localisation import localisation_scores
from histoxai.xai_eval.ranking import verdict
from histoxai.xai_eval.registry import METRICS
from histoxai.xai_eval.relevance import ABS_SUFFIX, relevance, score_sign
from histoxai.xai_eval.resolution import pool_to, res_name, smooth_random
from histoxai.xai_eval.sanity import ExplainFn, randomisation_cascade, sanity_summary
from histoxai.xai_eval.shortcut import shortcut_report
from histoxai.xai_eval.stability import max_sensitivity, variant_agreement
from histoxai.xai_eval.tissue import TISSUE_CLASSES, binned_shares, class_shares

MODEL_FREE: tuple[str, ...] = ("sobel", "darkness")


@dataclass
class TargetResult:
    """Everything measured for one target.

    Attributes:
        per_patch: one row per (row name, patch) (and training seed: ``seed``, after
            :func:`pool_seeds`): method, patch_id, sample, y,
            abs_delta, every per-patch metric, ``share_<class>``.
        rows: row name -> ``{"kind": "method"|"reference", "resolution": [h, w]}``.
        stats: one row per (method, metric): mean, lo, hi, n, and for normalised
            metrics norm_mean, norm_lo, norm_hi; p_top (among methods); the leader and
            the paired interval of leader − method (oriented: > 0 = leader better).
        verdict: :func:`histoxai.xai_eval.ranking.verdict`.
        curves: row -> curve name -> mean curve (steps + 1,) of the score drop.
        cascade: method -> step -> {"rank_corr", "ssim"} mean similarity of |map|
            (the first seed's model after :func:`pool_seeds`).
        passes_sanity: method -> passed the randomisation check (on every seed's model
            after :func:`pool_seeds`).
        sanity_by_seed: method -> training seed -> passed; cascade_by_seed: training
            seed -> ``cascade`` of that seed's model (both filled by :func:`pool_seeds`).
        shares, binned: tissue shares of positive relevance (overall, by bin).
        agreement: one row per pair of variants of the same method.
        shortcut: border-band report or None.
        nuclei: per-nucleus ratio table (methods), ``nuclei_summary`` its summary.
        seeds: training seeds whose models' maps ``per_patch`` and ``stats`` pool
            (:func:`pool_seeds`; empty: one model, seed not recorded).
    """

    target: str
    per_patch: pd.DataFrame
    rows: dict[str, dict]
    stats: pd.DataFrame = field(default_factory=pd.DataFrame)
    verdict: dict = field(default_factory=dict)
    curves: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    cascade: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    passes_sanity: dict[str, bool] = field(default_factory=dict)
    sanity_by_seed: dict[str, dict[int, bool]] = field(default_factory=dict)
    cascade_by_seed: dict[int, dict[str, dict[str, dict[str, float]]]] = field(default_factory=dict)
    shares: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    binned: dict[str, dict[str, pd.DataFrame]] = field(default_factory=dict)
    agreement: pd.DataFrame = field(default_factory=pd.DataFrame)
    shortcut: pd.DataFrame | None = None
    nuclei: pd.DataFrame = field(default_factory=pd.DataFrame)
    nuclei_summary: pd.DataFrame = field(default_factory=pd.DataFrame)
    seeds: list[int] = field(default_factory=list)

    @property
    def methods(self) -> list[str]:
        return [r for r, v in self.rows.items() if v["kind"] == "method"]


def reference_maps(
    images: Tensor, truth, resolutions: Mapping[str, tuple[int, int]], seed: int
) -> dict[str, tuple[Tensor, tuple[int, int]]]:
    """Reference rows: name -> (relevance maps (B, H, W), native resolution)."""
    size = tuple(images.shape[-2:])
    generator = torch.Generator().manual_seed(seed)
    out: dict[str, tuple[Tensor, tuple[int, int]]] = {
        "sobel": (sobel_maps(images), size),
        "darkness": (darkness_maps(images), size),
    }
    signed = None if truth is None else torch.as_tensor(truth.signed).to(images.device).float()
    for res in sorted({size, *(tuple(r) for r in resolutions.values())}):
        name = "" if res == size else "@" + res_name("", res).lstrip("@")
        out[f"random{name}"] = (smooth_random((len(images), *size), res, generator).to(images.device), res)
        if signed is not None:
            out[f"oracle{name}"] = (pool_to(signed, res), res)
    return out


def references_of(res: tuple[int, int], size: tuple[int, int]) -> tuple[str, str]:
    """(random row, oracle row) of a native resolution."""
    return (
        ("random", "oracle")
        if tuple(res) == tuple(size)
        else (res_name("random", res), res_name("oracle", res))
    )


def evaluate_target(
    model: nn.Module,
    target: str,
    images: Tensor,
    maps: Mapping[str, Tensor | np.ndarray],
    *,
    patch_ids: np.ndarray,
    samples: np.ndarray,
    y: np.ndarray,
    y_hat: np.ndarray,
    labels: Tensor,
    score: str,
    resolutions: Mapping[str, tuple[int, int]],
    cfg: XaiEvalConfig,
    seed: int = 0,
    truth=None,
    explain_for: Callable[[str, np.ndarray], ExplainFn | None] | None = None,
    variant_pairs: list[tuple[str, str]] = (),
    shortcut_cue: np.ndarray | None = None,
    effects: pd.DataFrame | None = None,
    progress: bool = True,
) -> TargetResult:
    """Measure the maps of every method variant of one target head.

    Args:
        model: the regressor (eval mode), on its device.
        target: target name; must be in ``model.targets``.
        images: (B, 3, H, W) float in [0, 1] on the model's device.
        maps: variant name -> (B, H, W) raw stored maps of these patches.
        patch_ids, samples, y, y_hat: (B,) per patch.
        labels: (B, H, W) ``TISSUE_CLASSES`` labels.
        score: the score function the maps explain (``higher``/``lower``/``target``).
        resolutions: variant -> native (h, w) of its maps.
        cfg: the ``xai_eval`` config section.
        seed: ``base.seed``; every random draw derives from it.
        truth: :class:`~histoxai.xai_eval.truth.Truth` of these patches, or None.
        explain_for: (variant, row positions) -> re-explaining callable for those
            patches (sanity and robustness), or None to skip.
        variant_pairs: pairs of variant names to compare (same method, other params).
        shortcut_cue: (B,) border cue strength; when given the shortcut report is made.
        effects: :func:`~histoxai.xai_eval.intervention.object_effects` of some of
            these patches (scored with the same ``score``), or None.
        progress: show progress bars.
    """
    targets = tuple(getattr(model, "targets", ()))
    if target not in targets:
        raise ValueError(f"target {target!r} is not an output of the model (targets {targets})")
    head, sign = targets.index(target), score_sign(score)
    device, size, b = images.device, tuple(images.shape[-2:]), images.shape[0]

    def predict(x: Tensor) -> Tensor:
        return sign * model(x)[:, head].float()

    rel: dict[str, Tensor] = {}
    rows: dict[str, dict] = {}
    for name, m in maps.items():
        raw = torch.as_tensor(np.asarray(m, dtype=np.float32)).to(device)
        if tuple(raw.shape) != (b, *size):
            raise ValueError(f"maps of {target}/{name} have shape {tuple(raw.shape)}, expected {(b, *size)}")
        res = [int(v) for v in resolutions.get(name, size)]
        rel[name] = relevance(raw, score)
        rows[name] = {"kind": "method", "resolution": res, "base": name}
        if cfg.magnitude_variants:
            rel[name + ABS_SUFFIX] = raw.abs()
            rows[name + ABS_SUFFIX] = {"kind": "method", "resolution": res, "base": name}
    for name, (m, res) in reference_maps(
        images, truth, {k: tuple(v["resolution"]) for k, v in rows.items()}, seed
    ).items():
        rel[name] = m
        rows[name] = {"kind": "reference", "resolution": list(res)}

    result = TargetResult(target, pd.DataFrame(), rows)
    generator = torch.Generator().manual_seed(seed + 1)
    abs_delta = np.abs(np.asarray(y_hat, np.float64) - np.asarray(y, np.float64))
    frames = []
    # the same for every row: the baseline images and the scores of originals and baselines
    batches = [slice(i, i + cfg.batch_size) for i in range(0, b, cfg.batch_size)]
    bases = [baseline_images(images[s], cfg.baseline, cfg.blur_sigma_px) for s in batches]
    with torch.no_grad():
        known = [(predict(images[s]).double(), predict(base).double()) for s, base in zip(batches, bases)]
    for name, m in tqdm(rel.items(), desc=f"xai-eval {target}", disable=not progress, leave=False):
        parts: dict[str, list[Tensor]] = {}
        curve_parts: dict[str, list[Tensor]] = {}
        for s, base, (ref, base_score) in zip(batches, bases, known):
            scores, curves = faithfulness_scores(
                predict, images[s], m[s], base, cfg.steps, cfg.road_noise_sd, cfg.batch_size, generator,
                ref, base_score,
            )  # fmt: skip
            for k, v in scores.items():
                parts.setdefault(k, []).append(v.cpu())
            for k, v in curves.items():
                curve_parts.setdefault(k, []).append(v)
        per = {k: torch.cat(v) for k, v in parts.items()}
        if truth is not None:
            per.update(localisation_scores(m, truth))
        result.curves[name] = {k: torch.cat(v).nanmean(dim=0).numpy() for k, v in curve_parts.items()}
        share, area = class_shares(m, labels)
        result.shares[name] = {"attribution": dict(zip(TISSUE_CLASSES, share.nanmean(dim=0).tolist())),
                               "area": dict(zip(TISSUE_CLASSES, area.mean(dim=0).tolist()))}  # fmt: skip
        result.binned[name] = {"target": binned_shares(share.numpy(), y, cfg.n_bins, "target_bin"),
                               "error": binned_shares(share.numpy(), abs_delta, cfg.n_bins, "error_bin")}  # fmt: skip
        frame = pd.DataFrame({k: v.numpy() for k, v in per.items()})
        for c, cls in enumerate(TISSUE_CLASSES):
            frame[f"share_{cls}"] = share[:, c].numpy()
        frame.insert(0, "method", name)
        frame.insert(1, "patch_id", np.asarray(patch_ids))
        frame.insert(2, "sample", np.asarray(samples).astype(str))
        frame.insert(3, "y", np.asarray(y, dtype=np.float64))
        frame.insert(4, "abs_delta", abs_delta)
        frames.append(frame)
    per_patch = pd.concat(frames, ignore_index=True)

    checks = _model_checks(model, images, rows, explain_for, patch_ids, samples, cfg, seed, result, progress)
    if effects is not None and len(effects):
        with torch.no_grad():
            s_patch = dict(zip(map(int, patch_ids), predict(images).double().cpu().numpy()))
        pos = {int(p): i for i, p in enumerate(patch_ids)}
        for name in result.methods:
            got = intervention.object_scores(
                effects, s_patch, {p: rel[name][pos[p]].cpu().numpy() for p in pos}
            )
            checks.append(got.assign(method=name))
    if checks:
        extra = pd.concat(checks, ignore_index=True).groupby(["method", "patch_id"], as_index=False).first()
        per_patch = per_patch.merge(extra, on=["method", "patch_id"], how="left")
    result.per_patch = per_patch

    result.agreement = pd.DataFrame(
        [{"a": a, "b": c, **{k: float(v.nanmean()) for k, v in variant_agreement(rel[a], rel[c]).items()}}
         for a, c in variant_pairs if a in rel and c in rel and min(size) >= 7]
    )  # fmt: skip
    if shortcut_cue is not None:
        result.shortcut = shortcut_report(rel, cfg.shortcut_band_px, shortcut_cue)
    if truth is not None:
        tables = [nuclei.nucleus_table(rel[m], truth, m) for m in result.methods]
        result.nuclei = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
        if len(result.nuclei):
            result.nuclei_summary = nuclei.property_summary(result.nuclei)
    result.stats = statistics(per_patch, rows, size, cfg, seed, result.passes_sanity)
    result.verdict = verdict(result.stats, rows, result.passes_sanity, cfg, truth is not None)
    return result


def pool_seeds(
    results: Mapping[int, TargetResult], size, cfg: XaiEvalConfig, seed: int, has_truth: bool
) -> TargetResult:
    """One target's results of several trained models (training seed -> result, the
    registered model's first) as one: the per-patch tables of every seed (``seed``
    column), and the statistics and verdict over all of them ((seed, sample) cells
    resampled, means over every seed's patches). The rest (curves, tissue shares,
    nuclei, agreement, shortcut) stays the first seed's. The randomisation check is every
    seed's: a method passes only if it passes on each trained model (``sanity_by_seed``,
    ``cascade_by_seed``), so a gate that one training run happens to open names nothing.

    Args:
        results: training seed -> :func:`evaluate_target` of that seed's model and maps.
        size: (h, w) of the patches.
        cfg: the ``xai_eval`` config section.
        seed: ``base.seed``.
        has_truth: the maps were scored against ground truth (the verdict reads localisation).
    """
    first = next(iter(results.values()))
    frames = [r.per_patch.drop(columns="seed", errors="ignore") for r in results.values()]
    per_patch = pd.concat(
        [f.assign(seed=int(s))[["method", "seed", *f.columns[1:]]] for s, f in zip(results, frames)],
        ignore_index=True,
    )
    by_seed: dict[str, dict[int, bool]] = {}
    for s, r in results.items():
        for m, passed in r.passes_sanity.items():
            by_seed.setdefault(m, {})[int(s)] = bool(passed)
    passes = {m: all(v.values()) for m, v in by_seed.items()}
    stats_table = statistics(per_patch, first.rows, size, cfg, seed, passes)
    return replace(
        first, per_patch=per_patch, stats=stats_table, seeds=[int(s) for s in results],
        passes_sanity=passes, sanity_by_seed=by_seed,
        cascade_by_seed={int(s): r.cascade for s, r in results.items() if r.cascade},
        verdict=verdict(stats_table, first.rows, passes, cfg, has_truth),
    )  # fmt: skip


def _model_checks(
    model, images, rows, explain_for, patch_ids, samples, cfg, seed, result, progress
) -> list[pd.DataFrame]:
    """Randomisation sanity and max-sensitivity of each method, per patch of the
    stratified subsets (``|abs`` rows share their variant's results)."""
    if explain_for is None:
        return []
    out = []
    ids = np.asarray(patch_ids, dtype=np.int64)
    sanity_rows = _stratified(samples, cfg.sanity_patches, seed)
    robust_rows = _stratified(samples, cfg.robustness_patches, seed + 1)
    for name in [r for r, v in rows.items() if v["kind"] == "method" and not r.endswith(ABS_SUFFIX)]:
        parts = []
        if len(sanity_rows):
            fn = explain_for(name, sanity_rows)
            if fn is not None:
                cascade = randomisation_cascade(
                    model, images[sanity_rows], fn, seed, draws=cfg.sanity_draws, progress=progress
                )
                result.cascade[name] = {s: _cascade_step(sims) for s, sims in cascade.items()}
                per, passed = sanity_summary(cascade, cfg.sanity_threshold)
                result.passes_sanity[name] = passed
                parts.append(
                    pd.DataFrame({k: v.numpy() for k, v in per.items()}).assign(patch_id=ids[sanity_rows])
                )
        if len(robust_rows):
            fn = explain_for(name, robust_rows)
            if fn is not None:
                got = max_sensitivity(
                    model, images[robust_rows], fn, cfg.robustness_radius, cfg.robustness_draws, seed
                )
                parts.append(
                    pd.DataFrame({k: v.numpy() for k, v in got.items()}).assign(patch_id=ids[robust_rows])
                )
        for variant in [name, name + ABS_SUFFIX] if name + ABS_SUFFIX in rows else [name]:
            for part in parts:
                out.append(part.assign(method=variant))
            if name in result.passes_sanity:
                result.passes_sanity[variant] = result.passes_sanity[name]
                result.cascade[variant] = result.cascade[name]
    return out


def _cascade_step(sims: dict[str, Tensor]) -> dict[str, float]:
    """One cascade step as the report keeps it: mean ρ and SSIM over patches and draws;
    the spread (``rank_corr_sd``) and the largest (``rank_corr_max``, what the gate
    reads) of the patch-mean ρ over re-initialisation draws."""
    out = {k: float(sims[k].nanmean()) for k in ("rank_corr", "ssim") if k in sims}
    per_draw = sims["rank_corr_draws"]
    out["rank_corr_sd"] = float(per_draw.std()) if len(per_draw) > 1 else 0.0
    out["rank_corr_max"] = float(per_draw.max())
    return out


def _stratified(samples: np.ndarray, n: int, seed: int) -> np.ndarray:
    from histoxai.xai_eval.inputs import stratified

    return stratified(samples, n, seed) if n > 0 else np.zeros(0, dtype=np.int64)


def statistics(
    per_patch: pd.DataFrame,
    rows: Mapping[str, dict],
    size,
    cfg: XaiEvalConfig,
    seed: int,
    passes_sanity: Mapping[str, bool] | None = None,
) -> pd.DataFrame:
    """Cluster-bootstrap summary of every declared metric (see :mod:`~histoxai.xai_eval.stats`).

    With a ``seed`` column (maps of several trained models, :func:`pool_seeds`) the
    bootstrap resamples (training seed, sample) cells; a metric measured on some seeds
    only (the first seed's sanity, robustness and intervention checks) resamples the
    cells of those seeds.

    ``p_top`` is among all methods; ``p_top_named`` among the methods that may be named
    (those that pass the randomisation sanity check), which is what the verdict reads."""
    passes_sanity = passes_sanity or {}
    per_patch = per_patch.reset_index(drop=True)
    seeds = per_patch["seed"].to_numpy() if "seed" in per_patch else np.zeros(len(per_patch), np.int64)
    cells: dict[tuple, tuple] = {}  # seeds a metric was measured on -> (rows, draws, codes)
    out = []
    methods = [r for r, v in rows.items() if v["kind"] == "method"]
    for metric, meta in METRICS.items():
        if metric not in per_patch.columns:
            continue
        measured = tuple(np.unique(seeds[np.isfinite(per_patch[metric].to_numpy(np.float64))]))
        if not measured:  # no finite value
            continue
        if measured not in cells:  # the first seed's checks: its cells only
            keep = np.isin(seeds, measured)
            draws, codes = stats.cell_weights(
                seeds[keep], per_patch["sample"].to_numpy()[keep], cfg.bootstrap, seed
            )
            cells[measured] = (keep, draws, codes)
        keep, draws, codes = cells[measured]
        table, boots = stats.summarise(per_patch[keep], metric, codes, draws, cfg.confidence)
        if not len(table):
            continue
        table = table.assign(metric=metric, family=meta.family, primary=meta.primary)
        norm = {}
        if meta.normalised:
            for name in table["method"]:
                rnd, orc = references_of(rows[name]["resolution"], size)
                gap = (
                    stats.interval(boots[orc] - boots[rnd], cfg.confidence)
                    if rnd in boots and orc in boots
                    else None
                )
                # the ceiling must beat chance at this resolution, or nothing can be normalised
                if gap is not None and (gap[0] > 0 if meta.higher else gap[1] < 0):
                    nb = stats.normalised(boots[name], boots[rnd], boots[orc])
                    lo, hi = stats.interval(nb, cfg.confidence)
                    mean = stats.normalised(
                        *(np.array(table.set_index("method").loc[k, "mean"]) for k in (name, rnd, orc))
                    )
                    norm[name] = (float(mean), lo, hi)
        table["norm_mean"] = [norm.get(n, (np.nan,) * 3)[0] for n in table["method"]]
        table["norm_lo"] = [norm.get(n, (np.nan,) * 3)[1] for n in table["method"]]
        table["norm_hi"] = [norm.get(n, (np.nan,) * 3)[2] for n in table["method"]]
        ptop = stats.p_top({m: boots[m] for m in methods if m in boots}, meta.higher)
        table["p_top"] = [ptop.get(n, np.nan) for n in table["method"]]
        named = {m: boots[m] for m in methods if m in boots and passes_sanity.get(m, True)}
        ptop = stats.p_top(named, meta.higher)
        table["p_top_named"] = [ptop.get(n, np.nan) for n in table["method"]]
        # paired comparison with the leader (same bootstrap draws): leader − row, oriented
        # so that > 0 means the leader is better; an interval containing 0 is a tie
        sign = 1.0 if meta.higher else -1.0
        ranked = [m for m in methods if m in boots]
        leader = max(ranked, key=lambda m: sign * np.nanmean(boots[m])) if ranked else None
        pairs = {
            m: stats.paired(sign * boots[leader], sign * boots[m], cfg.confidence) for m in ranked if leader
        }
        table["leader"] = leader
        for key, col in (("lo", "vs_leader_lo"), ("hi", "vs_leader_hi")):
            table[col] = [pairs[n][key] if n in pairs and n != leader else np.nan for n in table["method"]]
        out.append(table)
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()
