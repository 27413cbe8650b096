"""What ``histoxai xai-eval`` reads: the saliency store, the patch store, the explained
model, the patches to score, and seeded re-explainers for sanity and robustness."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from histoxai.config import Config


def model_name(model_uri: str) -> str:
    """Registered model name of ``models:/NAME@alias`` or ``models:/NAME/VERSION``."""
    if not model_uri.startswith("models:/") or not model_uri[len("models:/") :]:
        raise ValueError(f"model URI {model_uri!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    return model_uri[len("models:/") :].split("@")[0].split("/")[0]


def saliency_dir(cfg: Config, explicit: str | None = None) -> Path:
    """Where the maps are: ``--saliency-dir``, ``xai_eval.saliency_dir``,
    ``explain.output_dir`` or ``base.saliency_dir``/<registered name>."""
    chosen = explicit or cfg.xai_eval.saliency_dir or cfg.explain.output_dir
    return Path(chosen) if chosen else Path(cfg.base.saliency_dir) / model_name(cfg.explain.model_uri)


def output_dir(cfg: Config, sal_root: Path) -> Path:
    """``xai_eval.output_dir`` or ``base.reports_dir``/xai_eval/<saliency dir name>."""
    x = cfg.xai_eval
    return Path(x.output_dir) if x.output_dir else Path(cfg.base.reports_dir) / "xai_eval" / sal_root.name


def check_patch_size(sal, store) -> None:
    """Refuse maps made on patches of another size than the patch store's (a model
    trained and explained on another store)."""
    from histoxai.errors import InputError

    made = sal.manifest.get("patch_size_px")
    if made is not None and int(made) != store.patch_size:
        raise InputError(
            f"{sal.root} holds maps of {made} px patches but the patch store {store.root} has "
            f"{store.patch_size} px patches; point base.patches_dir at the store it explained"
        )


def select_patches(patch_ids: np.ndarray, max_patches: int, seed: int) -> np.ndarray:
    """All ``patch_ids`` (``max_patches`` 0) or a seeded random subset, in id order."""
    ids = np.asarray(patch_ids, dtype=np.int64)
    if max_patches and len(ids) > max_patches:
        ids = np.random.default_rng(seed).choice(ids, size=max_patches, replace=False)
    return np.sort(ids)


def stratified(samples: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Up to ``n`` row positions spread evenly over samples (round robin over samples,
    seeded order within each), sorted."""
    samples = np.asarray(samples).astype(str)
    rng = np.random.default_rng(seed)
    pools = [list(rng.permutation(np.flatnonzero(samples == s))) for s in np.unique(samples)]
    out: list[int] = []
    while len(out) < min(n, len(samples)):
        for pool in pools:
            if pool and len(out) < n:
                out.append(int(pool.pop(0)))
    return np.sort(np.asarray(out, dtype=np.int64))


def shortcut_cue(store, ids: np.ndarray, mode: str) -> np.ndarray | None:
    """Per-patch cue strength for the shortcut report, or None when it is not made."""
    has = "shortcut_cue" in store.index.columns
    if mode == "off" or (mode == "auto" and not has):
        return None
    if not has:
        raise ValueError(
            f"xai_eval.shortcut=on but the patch store {store.root} has no 'shortcut_cue' column "
            "(prepare it with data.phantom.shortcut=true)"
        )
    cue = store.index["shortcut_cue"].to_numpy(np.float64)[ids]
    if mode == "auto" and not np.nanmax(np.abs(cue), initial=0.0) > 0:
        return None
    return cue


def explainer(variant: dict, head: int, score: str, y: np.ndarray, seed: int):
    """``explain_fn(model, images)`` re-running one stored variant on patches whose
    measured values are ``y``. Every call re-seeds torch's RNG (on a fork, the caller's
    streams untouched), so a stochastic method (SmoothGrad) draws the same noise for
    the same batch layout: reruns are identical and robustness compares like with like."""
    from histoxai.explain.methods import run_variant
    from histoxai.explain.scores import SCORES

    if score not in SCORES:
        raise ValueError(f"saliency manifest score {score!r}: expected one of {sorted(SCORES)}")
    y_t = torch.tensor(np.asarray(y, dtype=np.float32))

    def explain(model: nn.Module, images: Tensor) -> Tensor:
        devices = [images.device.index or 0] if images.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            out = run_variant(
                variant, model, images, head, SCORES[score], y_t[: len(images)].to(images.device)
            )
        return out.detach().float()

    explain.repeatable = True  # re-seeded: the same model and images give the same maps
    return explain


def load_model(sal, checkpoint: str | None, cfg: Config) -> tuple[nn.Module, dict]:
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
            raise ValueError(
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
    from histoxai.tracking import load_registered_model, resolve_tracking_uri

    uri = manifest.get("model_uri") or cfg.explain.model_uri
    if info["name"] and info["version"]:
        uri = f"models:/{info['name']}/{info['version']}"  # the exact version that was explained
    model, reg = load_registered_model(
        uri, resolve_tracking_uri(recorded=info.get("tracking_uri"), must_exist=True)
    )
    info.update({k: reg.get(k, info.get(k)) for k in ("name", "version", "run_id", "uri")})
    return model, info


def seed_stores(sal, checkpoint: str | None) -> list[tuple[int, object, Path]]:
    """(training seed, store, checkpoint) of each further seed's maps: the sub-stores
    ``<saliency>/seeds/<seed>/`` that ``histoxai explain`` writes for a training output
    trained with several ``base.seeds``, in the order of their manifest's ``seeds``. The
    checkpoint is ``seeds/<seed>/model.pt`` beside ``checkpoint``, else the one the
    sub-store's manifest records; each must be that seed's model of the main store's run.
    """
    from histoxai.errors import InputError, MissingInputError
    from histoxai.explain.store import SaliencyStore

    root = sal.root / "seeds"
    found = sorted(d for d in root.iterdir() if d.name.isdigit()) if root.is_dir() else []
    out = []
    for folder in found:
        sub, seed = SaliencyStore(folder), int(folder.name)
        sub.verify()
        for key in ("model_uri", "model_version", "run_id", "patch_ids", "complete", "score"):
            if sub.manifest.get(key) != sal.manifest.get(key):
                raise InputError(
                    f"{folder}: its manifest's {key} differs from that of {sal.root} (maps of another "
                    "model, other patches or methods); run `histoxai explain` again"
                )
        recorded = sub.manifest.get("checkpoint", "")
        path = Path(checkpoint).parent / "seeds" / str(seed) / "model.pt" if checkpoint else Path(recorded)
        if not path.is_file():
            raise MissingInputError(
                f"{folder} holds maps of training seed {seed} but its model {path} is missing "
                "(pass --checkpoint <model dir>/model.pt of the explained training output)"
            )
        out.append((seed, sub, path))
    order = [int(s) for s in out[0][1].manifest.get("seeds") or []] if out else []
    return sorted(out, key=lambda e: order.index(e[0]) if e[0] in order else len(order) + e[0])


def log_results(info: dict, out_dir: Path, metrics: dict[str, float], files: list[Path]) -> str | None:
    """Log ``metrics`` and the report ``files`` to the model's MLflow run (skipped
    without a run id). Returns the run id logged to."""
    run_id = info.get("run_id")
    if not run_id:
        return None
    from histoxai.tracking import log_artifacts, log_metrics, require_run, resolve_tracking_uri

    uri = resolve_tracking_uri(recorded=info.get("tracking_uri"), must_exist=True)
    require_run(str(run_id), uri, out_dir)
    log_metrics(str(run_id), {f"xai/{k}": v for k, v in metrics.items()}, uri)
    by_dir: dict[str, list[Path]] = {}
    for f in files:
        rel = f.parent.relative_to(out_dir)
        by_dir.setdefault("xai_eval" if str(rel) == "." else f"xai_eval/{rel}", []).append(f)
    for where, group in by_dir.items():
        log_artifacts(str(run_id), sorted(group), where, uri)
    return str(run_id)
