"""Measure the saliency maps of one explained model: localisation against the phantom's
masks, faithfulness in target units, randomisation sanity, stability, tissue-class
shares, the border shortcut; rank the methods per target and write the report.

Run::

    histoxai xai-eval                                             # maps of explain.model_uri
    histoxai xai-eval --saliency-dir data/saliency/histoxai-cc
    histoxai xai-eval --checkpoint models/histoxai-mdfa/model.pt --set xai_eval.max_patches=64

Reads ``data/patches``, the saliency directory (``histoxai explain``) and the model that
made the maps (the exact registry version in the saliency manifest, or
``--checkpoint``); writes ``reports/xai_eval/<saliency dir name>/`` (``metrics.json``,
``ranking.json``, ``report.md``, CSV tables, ``plots/*.png``) and logs them to the
model's MLflow run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from histoxai.config import Config, XaiEvalConfig
from histoxai.errors import InputError

if TYPE_CHECKING:  # heavy imports (torch, matplotlib) wait until the command runs
    import torch

    from histoxai.data.store import PatchStore
    from histoxai.explain.store import SaliencyStore
    from histoxai.xai_eval.suite import SuiteSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--saliency-dir", default=None,
        help="saliency maps to evaluate (default: xai_eval.saliency_dir, else explain's output directory)",
    )  # fmt: skip
    parser.add_argument(
        "--checkpoint", default=None,
        help="model.pt of the explained model (default: the registry version named in the saliency manifest)",
    )  # fmt: skip


def model_name(model_uri: str) -> str:
    """Registered model name of ``models:/NAME@alias`` or ``models:/NAME/VERSION``."""
    if not model_uri.startswith("models:/") or not model_uri[len("models:/") :]:
        raise InputError(f"model URI {model_uri!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    return model_uri[len("models:/") :].split("@")[0].split("/")[0]


def saliency_dir(cfg: Config, explicit: str | None = None) -> Path:
    """Where the maps are: ``--saliency-dir``, ``xai_eval.saliency_dir``,
    ``explain.output_dir`` or ``base.saliency_dir``/<registered name>."""
    chosen = explicit or cfg.xai_eval.saliency_dir or cfg.explain.output_dir
    return Path(chosen) if chosen else Path(cfg.base.saliency_dir) / model_name(cfg.explain.model_uri)


def settings(x: XaiEvalConfig, seed: int) -> SuiteSettings:
    from histoxai.xai_eval.suite import SuiteSettings

    return SuiteSettings(
        steps=x.steps, baseline=x.baseline, blur_sigma_px=x.blur_sigma_px, road_noise_sd=x.road_noise_sd,
        batch_size=x.batch_size, localisation_backend=x.localisation_backend, relevance=x.relevance,
        sanity_patches=x.sanity_patches,
        sanity_threshold=x.sanity_threshold, stability_patches=x.stability_patches,
        stability_noise_sd=x.stability_noise_sd, stability_copies=x.stability_copies, n_bins=x.n_bins,
        shortcut_band_px=x.shortcut_band_px, seed=seed,
    )  # fmt: skip


def run(cfg: Config, args: argparse.Namespace | None = None) -> Path:
    """Evaluate the maps in the saliency directory and write the report."""
    import torch

    from histoxai.data.store import PatchStore
    from histoxai.explain.store import SaliencyStore
    from histoxai.xai_eval.localisation import TRUTH_CLASSES
    from histoxai.xai_eval.report import flat_metrics, ranking, write_report
    from histoxai.xai_eval.stability import variant_pairs
    from histoxai.xai_eval.suite import TargetResult, evaluate_target
    from histoxai.xai_eval.tissue import labels_from_colour, labels_from_masks

    x = cfg.xai_eval
    sal = SaliencyStore(saliency_dir(cfg, getattr(args, "saliency_dir", None)))
    store = PatchStore(cfg.base.patches_dir)
    device = torch.device(
        "cuda" if x.device == "cuda" or (x.device == "auto" and torch.cuda.is_available()) else "cpu"
    )
    model, info = load_model(sal, getattr(args, "checkpoint", None), cfg)
    model = model.to(device).eval()

    ids = select_patches(sal.patch_ids, x.max_patches, cfg.base.seed)
    missing = ids[ids >= len(store)]
    if missing.size:
        raise InputError(f"{sal.root}: patch id {int(missing[0])} is not in the patch store {store.root}")
    rows = sal.rows(ids)
    images = torch.from_numpy(store.images(ids)).permute(0, 3, 1, 2).float().div(255.0).to(device)
    masks = torch.from_numpy(store.masks(ids)) if store.has_masks else None
    labels = (
        labels_from_masks(masks)
        if masks is not None
        else labels_from_colour(store.images(ids), x.nuclei_threshold or None, x.air_brightness)
    )
    cue = shortcut_cue(store, ids, x.shortcut)
    score = sal.manifest.get("score", cfg.explain.score)
    pairs = variant_pairs(sal.variants)

    results: dict[str, TargetResult] = {}
    for target in [t for t in sal.targets if t in model.targets]:
        variants = [v for v in sal.variants if sal.is_complete(target, v)]
        if not variants:
            print(f"xai-eval: warning: no complete maps for target {target} in {sal.root}; skipped")
            continue
        meta = sal.meta[sal.meta["target"] == target].set_index("patch_id").reindex(ids)
        y = meta["y"].to_numpy(np.float64)
        results[target] = evaluate_target(
            model, target, images,
            {v: sal.read(target, v, rows) for v in variants},
            patch_ids=ids, y=y, y_hat=meta["y_hat"].to_numpy(np.float64), labels=labels,
            masks=masks if target in TRUTH_CLASSES else None,
            explain_fns={v: explainer(sal.variants[v], model.targets.index(target), score, y, device) for v in variants},
            variant_pairs=[p for p in pairs if p[0] in variants and p[1] in variants],
            shortcut_cue=cue, settings=settings(x, cfg.base.seed),
        )  # fmt: skip
    if not results:
        raise InputError(
            f"{sal.root}: no target of the model {tuple(model.targets)} has complete saliency maps"
        )

    out_dir = Path(x.output_dir) if x.output_dir else Path(cfg.base.reports_dir) / "xai_eval" / sal.root.name
    report_info = {
        "model": info.get("name"), "model_version": info.get("version"), "model_uri": info.get("uri"),
        "run_id": info.get("run_id"), "saliency": str(sal.root), "patch store": str(store.root),
        "patches": f"{len(ids)} of {len(sal.patch_ids)} explained", "score explained": score, "relevance": x.relevance, "device": str(device),
        "ground truth": "phantom masks" if masks is not None else "none (tissue classes by colour deconvolution)",
    }  # fmt: skip
    write_report(out_dir, results, report_info)
    logged = log_results(info, out_dir, flat_metrics(results))
    rank = ranking(results)
    print(f"xai-eval: {out_dir}{' (logged to run ' + logged + ')' if logged else ''}")
    for target, entry in rank["targets"].items():
        order = ", ".join(
            f"{r['method']} ({r['score'] if r['score'] is None else round(r['score'], 2)})"
            for r in entry["methods"]
        )
        print(f"  {target}: trust {entry['trusted']}; order {order}")
    return out_dir


def select_patches(patch_ids: np.ndarray, max_patches: int, seed: int) -> np.ndarray:
    """At most ``max_patches`` of ``patch_ids``: a seeded random subset, in id order."""
    ids = np.asarray(patch_ids, dtype=np.int64)
    if len(ids) > max_patches:
        ids = np.random.default_rng(seed).choice(ids, size=max_patches, replace=False)
    return np.sort(ids)


def shortcut_cue(store: PatchStore, ids: np.ndarray, mode: str) -> np.ndarray | None:
    """Per-patch cue strength for the shortcut report, or None when it is not made."""
    has = "shortcut_cue" in store.index.columns
    if mode == "off" or (mode == "auto" and not has):
        return None
    if not has:
        raise InputError(
            f"xai_eval.shortcut=on but the patch store {store.root} has no 'shortcut_cue' column "
            "(prepare it with data.phantom.shortcut=true)"
        )
    cue = store.index["shortcut_cue"].to_numpy(np.float64)[ids]
    if mode == "auto" and not np.nanmax(np.abs(cue), initial=0.0) > 0:
        return None
    return cue


def explainer(variant: dict, head: int, score: str, y: np.ndarray, device: torch.device):
    """``explain_fn(model, images)`` re-running one stored variant (for sanity and
    stability); ``images`` are the first rows of the evaluated patches, so ``y`` is
    sliced to match (used by the ``target`` score)."""
    import torch

    from histoxai.explain.methods import run_variant
    from histoxai.explain.scores import SCORES

    if score not in SCORES:
        raise InputError(f"saliency manifest score {score!r}: expected one of {sorted(SCORES)}")
    y_all = torch.tensor(np.asarray(y, dtype=np.float32), device=device)

    def explain(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
        return run_variant(variant, model, images, head, SCORES[score], y_all[: len(images)]).detach().float()

    return explain


def load_model(sal: SaliencyStore, checkpoint: str | None, cfg: Config) -> tuple[torch.nn.Module, dict]:
    """The explained model and facts about it (name, version, uri, run_id, tracking_uri).

    ``--checkpoint`` wins; otherwise the manifest's exact registry version is loaded
    through ``histoxai.tracking.load_registered_model``.
    """
    from histoxai.models import load_checkpoint

    manifest = sal.manifest
    info = {
        "name": manifest.get("model_name"), "version": manifest.get("model_version"),
        "uri": manifest.get("model_uri"), "run_id": manifest.get("run_id"),
        "tracking_uri": manifest.get("tracking_uri"),
    }  # fmt: skip
    if checkpoint:
        model = load_checkpoint(checkpoint)
        made_by, ours = info["run_id"], getattr(model, "checkpoint_extra", {}).get("run_id")
        if made_by and ours and made_by != ours:
            raise InputError(
                f"{sal.root} holds maps of the model of run {made_by}, but {checkpoint} is from run {ours}; "
                "run `histoxai explain` again (or pass the matching checkpoint)"
            )
        run_json = Path(checkpoint).with_name("run.json")
        if run_json.is_file() and not info["run_id"]:
            run = json.loads(run_json.read_text())
            info.update({k: run.get(f"model_{k}", info[k]) for k in ("name", "version")})
            info.update(
                run_id=run.get("run_id"), tracking_uri=run.get("tracking_uri"), uri=run.get("model_uri")
            )
        return model, info
    from histoxai.tracking import load_registered_model

    uri = manifest.get("model_uri") or cfg.explain.model_uri
    if info["name"] and info["version"]:
        uri = f"models:/{info['name']}/{info['version']}"  # the exact version that was explained
    model, reg = load_registered_model(uri, _tracking_uri(info.get("tracking_uri")))
    info.update({k: reg.get(k, info.get(k)) for k in ("name", "version", "run_id", "uri")})
    return model, info


def _tracking_uri(recorded: str | None) -> str:
    from histoxai.tracking import resolve_tracking_uri

    return resolve_tracking_uri(recorded=recorded, must_exist=True)


def log_results(info: dict, out_dir: Path, metrics: dict[str, float]) -> str | None:
    """Log ``metrics`` and the report files to the model's MLflow run (skipped without
    a run id). Returns the run id logged to."""
    run_id = info.get("run_id")
    if not run_id:
        return None
    from histoxai.tracking import log_report

    uri = _tracking_uri(info.get("tracking_uri"))
    log_report(str(run_id), uri, {f"xai/{k}": v for k, v in metrics.items()}, out_dir, "xai_eval")
    return str(run_id)
