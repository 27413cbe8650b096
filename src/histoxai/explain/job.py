"""One ``histoxai explain`` job: which model, which patches, which methods, where to.

The model is, first match wins: the champion a tuning study registered
(``explain.study``: the study's ``summary.json``, pinned to one registry version; the tune
pipeline pipelines/tune/dvc.yaml passes its tune stage's), a training output directory
(``explain.model_dir``: ``model.pt`` and its ``run.json``, the checkpoint the ``train``
stage wrote and registered as ``@candidate``, so DVC sees exactly which checkpoint is
explained), or the registry (``explain.model_uri``, resolved to one version). The
manifest records which and why (``model_source``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from histoxai.config import Config, ExplainConfig
from histoxai.data.provenance import check_model_store
from histoxai.data.store import PatchStore
from histoxai.errors import InputError, MissingInputError
from histoxai.explain.methods import resolve_variants
from histoxai.explain.runner import explain_patches
from histoxai.explain.store import SaliencyStore
from histoxai.training.distributed import Group


def study_champion(path: str) -> tuple[dict[str, Any] | None, str]:
    """The registered champion of a ``histoxai tune`` summary (``best``: ``model_uri``,
    ``model_version``, ``number``, ...) and a note; ``None`` and why when it has none."""
    file = Path(path)
    if not file.is_file():
        raise MissingInputError(
            f"explain.study={path!r}: {file} is missing (run `histoxai tune` or "
            "`dvc repro pipelines/tune/dvc.yaml`)"
        )
    try:
        summary = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"explain.study={path!r}: {file} is not valid JSON: {err}") from err
    best = summary.get("best") or {}
    name = summary.get("study_name", file.parent.name)
    if not best:
        return None, f"study {name} has no complete trial"
    if not best.get("model_uri"):
        return None, f"study {name} registered no champion (tune.register: false)"
    return best, f"champion of study {name} (best trial {best.get('number')}, {path})"


def load_explained_model(ex: ExplainConfig, tracking_uri: str) -> tuple[nn.Module, dict[str, Any]]:
    """The model to explain and facts about it (name, version, uri, run_id, tags, source,
    requested_uri)."""
    champion, note = study_champion(ex.study) if ex.study else (None, "")
    if champion or not ex.model_dir:
        from histoxai.tracking import load_registered_model

        if ex.study and not champion:
            raise InputError(f"explain.study={ex.study!r}: {note}, and explain.model_dir is empty")
        uri = champion["model_uri"] if champion else ex.model_uri
        model, info = load_registered_model(uri, tracking_uri)
        source = f"registry: {uri} resolved to version {info.get('version')}"
        return model, {**info, "source": f"{note}: {source}" if champion else source, "requested_uri": uri}
    from histoxai.models import load_checkpoint

    root = Path(ex.model_dir)
    run_json = root / "run.json"
    if not run_json.is_file():
        raise MissingInputError(
            f"explain.model_dir={ex.model_dir!r}: {run_json} is missing (run `histoxai train`)"
        )
    try:
        run = json.loads(run_json.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"{run_json} is not valid JSON: {err}") from err
    model = load_checkpoint(root / "model.pt")
    made_by = getattr(model, "checkpoint_extra", {}).get("run_id")
    if made_by and run.get("run_id") and made_by != run["run_id"]:
        raise InputError(
            f"{root}: model.pt is from run {made_by} but run.json from run {run['run_id']} "
            "(a training was interrupted between the two); run `histoxai train` again"
        )
    tags = {k: str(run[k]) for k in ("split_scheme", "data_hash") if k in run}
    info = {
        "name": run.get("model_name", root.name), "version": str(run.get("model_version", "")),
        "uri": run.get("model_uri", ""), "run_id": run.get("run_id", ""), "tags": tags,
        "source": f"model_dir: {root}/model.pt (the checkpoint the train stage wrote{'; ' + note if note else ''})",
        "run": run,
    }  # fmt: skip
    return model, info


def select_ids(
    patches: PatchStore, split: str, scheme: str, max_patches: int = 0, seed: int = 0
) -> np.ndarray:
    """Patch ids of ``split`` (``all``: every patch) of ``scheme``, at most ``max_patches``
    (0: no limit) drawn at random with ``seed``, in ascending order."""
    ids = patches.ids(split=None if split == "all" else split, scheme=scheme)
    if not len(ids):
        raise InputError(f"explain.split={split!r}: no patches of split scheme {scheme!r} in {patches.root}")
    if max_patches and len(ids) > max_patches:
        ids = np.sort(np.random.default_rng(seed).choice(ids, size=max_patches, replace=False))
    return ids


def explain_model(
    cfg: Config,
    model: nn.Module,
    info: Mapping[str, Any],
    group: Group | None = None,
    out: str | Path | None = None,
) -> SaliencyStore:
    """Explain ``model`` (described by ``info``: name, version, uri, run_id, tags, source,
    and for a further training seed ``seed``, ``seeds``, ``checkpoint``) as
    ``cfg.explain`` says, over ``cfg.base.patches_dir``, into ``out`` (default
    ``explain.output_dir``, else ``base.saliency_dir``/<name>); this worker's share when
    ``group`` has several."""
    group = group or Group()
    ex = cfg.explain
    variants = resolve_variants(ex.methods)
    patches = PatchStore(cfg.base.patches_dir)
    if info.get("run"):  # a model_dir: refuse a model trained on another store (patch size, index)
        check_model_store(info["run"], patches, str(ex.model_dir))
    tags = dict(info.get("tags") or {})
    # The split scheme the model was trained on (a registry version tag), else the config's.
    scheme = str(info.get("split_scheme") or tags.get("split_scheme") or cfg.data.split.scheme)
    ids = select_ids(patches, ex.split, scheme, ex.max_patches, cfg.base.seed)
    if out is None:
        out = Path(ex.output_dir) if ex.output_dir else Path(cfg.base.saliency_dir) / str(info["name"])
    if group.is_main:
        print(
            f"explain: {info.get('uri', ex.model_uri)} ({info.get('source', ex.model_uri)}) on {len(ids)} "
            f"{ex.split} patches ({scheme}); {len(variants)} variants x "
            f"{len(ex.targets or model.targets)} targets -> {out} ({group.world} worker(s))"
        )
    store = explain_patches(
        model, patches, ids, out, variants,
        targets=ex.targets or None, score=ex.score, split_scheme=scheme, batch_size=ex.batch_size,
        chunk_size=ex.chunk_size, device=ex.device, precision=ex.precision, seed=cfg.base.seed,
        progress=group.is_main, group=group,
        manifest={
            "model_uri": str(info.get("uri", ex.model_uri)),
            "requested_uri": str(info.get("requested_uri", "")),
            "model_source": str(info.get("source", "")),
            "model_name": str(info.get("name", "")),
            "model_version": str(info.get("version", "")),
            "run_id": str(info.get("run_id", "")),
            "split": ex.split,
            "data_hash": str(tags.get("data_hash", "")),
            **{k: info[k] for k in ("seed", "seeds", "checkpoint") if k in info},
        },
    )  # fmt: skip
    if group.is_main:
        for pair, t in store.manifest.get("timings", {}).items():
            print(f"  {pair:<40} {t['maps_per_s']:>9.1f} maps/s  {t['seconds']:>8.1f} s")
    return store


def explain_seeds(
    cfg: Config, info: Mapping[str, Any], main: SaliencyStore, group: Group | None = None
) -> list[SaliencyStore]:
    """Explain the model of every further training seed of ``explain.model_dir``
    (``run.json`` ``seeds`` after the first, the registered model's, which ``main``
    holds): ``seeds/<seed>/model.pt`` on the same patches with the same methods, into
    the sub-store ``<main>/seeds/<seed>/`` (resumed or replaced like any store).
    Nothing for a registry model or a single seed."""
    from histoxai.models import load_checkpoint

    seeds = [int(s) for s in (info.get("run") or {}).get("seeds") or []]
    stores = []
    for seed in seeds[1:]:
        path = Path(cfg.explain.model_dir) / "seeds" / str(seed) / "model.pt"
        if not path.is_file():
            raise MissingInputError(
                f"explain.model_dir={cfg.explain.model_dir!r}: {path} is missing but run.json lists "
                f"seeds {seeds} (run `histoxai train` again)"
            )
        model = load_checkpoint(path, seed=seed)
        source = f"model_dir: {path} (training seed {seed}; the registered model is seed {seeds[0]})"
        seed_info = {**info, "source": source, "seed": seed, "seeds": seeds, "checkpoint": str(path)}
        stores.append(explain_model(cfg, model, seed_info, group, out=main.root / "seeds" / str(seed)))
    return stores
