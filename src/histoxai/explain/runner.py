"""Batch runner: maps of every (target head, method variant) pair over a set of patches.

Each pair runs over all patches in batches (one adapter call per batch, no per-image
loop) and is written to the :class:`~histoxai.explain.store.SaliencyStore` as a whole,
atomically, then marked complete; a run killed part-way and started again skips the
complete pairs and redoes only the pair it was in. Noise is seeded per pair, so a
resumed run gives the maps a single run would.

Example:
    >>> variants = resolve_variants(["gradcampp", "layercam"])
    >>> store = explain_patches(model, PatchStore("data/patches"), ids, "data/saliency/mdfa", variants)
"""

from __future__ import annotations

import contextlib
import time
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from histoxai.data.store import PatchStore
from histoxai.explain.methods import run_variant
from histoxai.explain.scores import SCORES
from histoxai.explain.store import SaliencyStore, map_name, relative_error

FLOAT16_MAX = float(np.finfo(np.float16).max)
FLOAT16_TINY = float(np.finfo(np.float16).smallest_normal)


def resolve_device(device: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("explain.device='cuda' but no CUDA device is available")
    return torch.device(device)


def autocast(device: torch.device, precision: str = "auto") -> contextlib.AbstractContextManager:
    """Autocast context: ``auto`` is bf16 on CUDA and fp32 (none) on CPU."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device.type, dtype=dtype)


def to_input(patches: np.ndarray, device: torch.device) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float [0, 1] on ``device`` (channels-last in memory)."""
    x = torch.from_numpy(np.ascontiguousarray(patches)).to(device, non_blocking=True)
    return x.permute(0, 3, 1, 2).float().div_(255.0)


@torch.no_grad()
def predict(
    model: nn.Module, patches: PatchStore, ids: np.ndarray, batch_size: int, device: torch.device
) -> np.ndarray:
    """(N, T) predictions in real units, in fp32 (they feed Δ and rΔ)."""
    out = [
        model(to_input(patches.images(ids[i : i + batch_size]), device)).float().cpu()
        for i in range(0, len(ids), batch_size)
    ]
    return torch.cat(out).numpy() if out else np.empty((0, len(model.targets)), dtype=np.float32)


@torch.no_grad()
def native_resolutions(
    model: nn.Module, variants: Mapping[str, Mapping[str, Any]], size: int, device: torch.device
) -> dict[str, list[int]]:
    """Variant -> [h, w] of its maps before upsampling to the ``size`` px patch.

    CAMs (a ``layer`` or ``layers`` parameter): the layer's feature map, the finest one
    for fused layers; occlusion: window positions per axis; pixel methods: the patch.
    """
    from histoxai.explain.cams import capture, resolve_layer

    out: dict[str, list[int]] = {}
    for name, variant in variants.items():
        params = dict(variant.get("params") or {})
        layers = params.get("layers", [params["layer"]] if "layer" in params else None)
        if layers is not None:
            modules = [resolve_layer(model, layer)[1] for layer in layers]
            with capture(modules) as acts:
                model(torch.zeros(1, 3, size, size, device=device))
            out[name] = [int(v) for v in max(tuple(a.shape[-2:]) for a in acts if a is not None)]
        elif variant["method"] == "occlusion":
            n = (size - int(params["window"])) // int(params["stride"]) + 1
            out[name] = [n, n]
        else:
            out[name] = [size, size]
    return out


def saliency_meta(
    index: pd.DataFrame, ids: np.ndarray, targets: Sequence[str], y_hat: np.ndarray, split_col: str
) -> pd.DataFrame:
    """One row per (patch, target): ids, position, split, y, ŷ, Δ = ŷ − y, rΔ = (ŷ / y − 1) · 100."""
    rows = index.set_index("patch_id").loc[ids]
    frames = []
    for j, target in enumerate(targets):
        y = rows[target].to_numpy(np.float64) if target in rows else np.full(len(ids), np.nan)
        frames.append(
            pd.DataFrame(
                {
                    "patch_id": ids.astype(np.int64),
                    "sample": rows["sample"].to_numpy(),
                    "row": rows["row"].to_numpy(),
                    "col": rows["col"].to_numpy(),
                    "split": rows[split_col].to_numpy(),
                    "target": target,
                    "y": y,
                    "y_hat": y_hat[:, j].astype(np.float64),
                    "delta": y_hat[:, j] - y,
                    "rel_delta": relative_error(y, y_hat[:, j]),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def explain_patches(
    model: nn.Module,
    patches: PatchStore,
    ids: Sequence[int] | np.ndarray,
    out_dir: str | Path,
    variants: Mapping[str, Mapping[str, Any]],
    *,
    targets: Sequence[str] | None = None,
    score: str = "higher",
    split_scheme: str = "random",
    batch_size: int = 32,
    device: str | torch.device = "auto",
    precision: str = "auto",
    seed: int = 0,
    manifest: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> SaliencyStore:
    """Compute and store the maps of every (target, variant) pair not yet complete.

    Args:
        model: a regressor (``targets`` attribute; input [0, 1] RGB; output real units).
        patches: the patch store.
        ids: patch ids to explain.
        out_dir: saliency directory; an existing one for the same model version,
            patches, targets, variants and score is resumed, any other replaced.
        variants: resolved variants (``histoxai.explain.methods.resolve_variants``).
        targets: heads to explain (default: all of ``model.targets``).
        score: key of ``histoxai.explain.scores.SCORES``.
        split_scheme: split scheme whose split is recorded in the meta table.
        batch_size: patches per adapter call (SmoothGrad/IG multiply it by their
            ``noise_batch``/``step_batch`` inside the call).
        device: ``auto``, ``cpu``, ``cuda`` or a device.
        precision: autocast for the maps (``auto``: bf16 on CUDA, fp32 on CPU).
        seed: base seed; each pair's noise is seeded from it and the pair's name.
        manifest: extra manifest entries (model_uri, model_name, model_version, run_id...).
        progress: show a progress bar per pair.

    Returns:
        The store, with per-pair timings in ``manifest["timings"]``.
    """
    device = torch.device(device) if isinstance(device, torch.device) else resolve_device(device)
    ids = np.asarray(ids, dtype=np.int64)
    if not len(ids):
        raise ValueError(f"no patches to explain in {patches.root}")
    targets = list(model.targets if targets is None or not len(targets) else targets)
    unknown = [t for t in targets if t not in model.targets]
    if unknown:
        raise ValueError(f"explain.targets {unknown}: the model's heads are {list(model.targets)}")
    if score not in SCORES:
        raise ValueError(f"explain.score={score!r}: expected one of {sorted(SCORES)}")
    model = model.to(device).eval()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True

    y_hat = predict(model, patches, ids, batch_size, device)[
        :, [list(model.targets).index(t) for t in targets]
    ]
    meta = saliency_meta(patches.index, ids, targets, y_hat, f"split_{split_scheme}")
    manifest = {
        **(manifest or {}),
        "targets": targets,
        "variants": {k: dict(v) for k, v in variants.items()},
        "score": score,
        "split_scheme": split_scheme,
        "patch_size_px": patches.patch_size,
        "native_resolution": native_resolutions(model, variants, patches.patch_size, device),
        "patch_ids": ids.tolist(),
    }
    manifest.setdefault("model_uri", "")
    manifest.setdefault("model_version", "")
    store = SaliencyStore.create(out_dir, manifest, meta)

    score_fn = SCORES[score]
    size = patches.patch_size
    for target in targets:
        head = list(model.targets).index(target)
        y_all = meta.loc[meta["target"] == target, "y"].to_numpy(np.float32)
        for name, variant in variants.items():
            if store.is_complete(target, name):
                continue
            torch.manual_seed(seed + zlib.crc32(map_name(target, name).encode()))
            maps = np.empty((len(ids), size, size), dtype=np.float16)
            start = time.perf_counter()
            for i in tqdm(
                range(0, len(ids), batch_size), desc=map_name(target, name), disable=not progress, leave=False
            ):
                x = to_input(patches.images(ids[i : i + batch_size]), device)
                y = torch.from_numpy(y_all[i : i + len(x)]).to(device) if score == "target" else None
                with autocast(device, precision):
                    m = run_variant(variant, model, x, head, score_fn, y)
                maps[i : i + len(x)] = m.float().cpu().numpy()
            seconds = time.perf_counter() - start
            store.write_maps(target, name, maps, _info(maps, seconds, batch_size))
    return store


def _info(maps: np.ndarray, seconds: float, batch_size: int) -> dict[str, Any]:
    # Raw maps are stored as float16: record how much of the range it could not hold.
    a = np.abs(maps.astype(np.float32))
    nonzero = a[a > 0]
    return {
        "seconds": round(seconds, 3),
        "maps_per_s": round(len(maps) / max(seconds, 1e-9), 2),
        "batch_size": batch_size,
        "abs_max": float(a.max()) if a.size else 0.0,
        "overflow_fraction": float(np.isinf(maps).mean()) if maps.size else 0.0,
        "subnormal_fraction": float((nonzero < FLOAT16_TINY).mean()) if nonzero.size else 0.0,
    }
