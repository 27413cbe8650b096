"""Batch runner: maps of every (target head, method variant) pair over a set of patches.

Each pair runs over the patches in chunks of ``chunk_size`` rows (a multiple of the
batch size), one adapter call per batch. Maps are scaled and converted to float16 on
the device, copied back and written by a background thread into preallocated files of
the :class:`~histoxai.explain.store.SaliencyStore`; a chunk's done flag follows its rows,
so a killed run started again redoes at most the chunk it was in. A prefetch thread
reads the next batch (into pinned memory on CUDA) while the device works. Host memory
does not grow with the number of patches.

Noise is seeded per (pair, chunk), so maps do not depend on how chunks are shared out:
several workers (``torchrun``, see ``histoxai.training.distributed``) write disjoint
chunks of the same store and give the bytes one worker gives.

A run that does not resume the store in ``out_dir`` (other model, methods, patches)
builds the new store beside it (``.<name>.new``) and swaps it in only when every pair is
complete: a failed run leaves the previous maps intact. A lock file (``.<name>.lock``)
keeps a second writer out.

Example:
    >>> variants = resolve_variants(["gradcampp", "layercam"])
    >>> store = explain_patches(model, PatchStore("data/patches"), ids, "data/saliency/mdfa", variants)
"""

from __future__ import annotations

import contextlib
import ctypes
import queue
import threading
import time
import zlib
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from histoxai.config import ConfigError
from histoxai.data.store import PatchStore
from histoxai.explain.methods import passes_per_call, run_variant
from histoxai.explain.scores import SCORES
from histoxai.explain.store import (
    FLOAT16_TINY,
    FORMAT,
    SCALE_TOP,
    SaliencyStore,
    map_name,
    relative_error,
)
from histoxai.io import clean_leftovers, output_lock, replace_dir
from histoxai.training.distributed import Group, shard


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
    from histoxai.explain.cams import resolve_layer
    from histoxai.models.backbones import capture

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
    chunk_size: int = 256,
    device: str | torch.device = "auto",
    precision: str = "auto",
    seed: int = 0,
    manifest: Mapping[str, Any] | None = None,
    progress: bool = True,
    group: Group | None = None,
) -> SaliencyStore:
    """Compute and store the maps of every (target, variant) pair not yet complete.

    Args:
        model: a regressor (``targets`` attribute; input [0, 1] RGB; output real units).
        patches: the patch store.
        ids: patch ids to explain.
        out_dir: saliency directory; an existing one for the same model version,
            patches, targets, variants and score is resumed, any other replaced once
            the new store is complete.
        variants: resolved variants (``histoxai.explain.methods.resolve_variants``).
        targets: heads to explain (default: all of ``model.targets``).
        score: key of ``histoxai.explain.scores.SCORES``.
        split_scheme: split scheme whose split is recorded in the meta table.
        batch_size: patches per adapter call (SmoothGrad/IG split their copies inside
            the call to fit the memory budget).
        chunk_size: patches per completion record (rounded up to a multiple of
            ``batch_size``): what a killed run may have to redo.
        device: ``auto``, ``cpu``, ``cuda`` or a device.
        precision: autocast for the maps (``auto``: bf16 on CUDA, fp32 on CPU).
        seed: base seed; noise is seeded from it, the pair's name and the chunk.
        manifest: extra manifest entries (model_uri, model_name, model_version, run_id...).
        progress: show a progress bar per pair.
        group: this worker's place among several (default: the only one); workers
            take contiguous shares of the chunks.

    Returns:
        The store, with per-pair timings and statistics in ``manifest["timings"]``.
    """
    group = group or Group()
    fixed_mmap_threshold()
    device = torch.device(device) if isinstance(device, torch.device) else resolve_device(device)
    device = group.device(device)
    ids = np.asarray(ids, dtype=np.int64)
    if not len(ids):
        raise ValueError(f"no patches to explain in {patches.root}")
    targets = list(model.targets if targets is None or not len(targets) else targets)
    unknown = [t for t in targets if t not in model.targets]
    if unknown:
        raise ConfigError(f"explain.targets {unknown}: the model's heads are {list(model.targets)}")
    if score not in SCORES:
        raise ConfigError(f"explain.score={score!r}: expected one of {sorted(SCORES)}")
    model = model.to(device).eval()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    chunk_size = -(-max(chunk_size, 1) // batch_size) * batch_size
    out = Path(out_dir)

    with output_lock(out) if group.is_main else contextlib.nullcontext():
        work = None
        if group.is_main:
            clean_leftovers(out)
            y_hat = predict(model, patches, ids, batch_size, device)[
                :, [list(model.targets).index(t) for t in targets]
            ]
            meta = saliency_meta(patches.index, ids, targets, y_hat, f"split_{split_scheme}")
            full = {
                **(manifest or {}),
                "format": FORMAT,
                "chunk_size": chunk_size,
                "targets": targets,
                "variants": {k: dict(v) for k, v in variants.items()},
                "score": score,
                "split_scheme": split_scheme,
                "patch_size_px": patches.patch_size,
                "native_resolution": native_resolutions(model, variants, patches.patch_size, device),
                "passes_per_call": batched_passes(
                    model, variants, min(batch_size, len(ids)), patches.patch_size, device, precision
                ),
                "patch_ids": ids.tolist(),
            }
            full.setdefault("model_uri", "")
            full.setdefault("model_version", "")
            # Resume in place; else build beside the old store and swap it in at the end.
            work = out if SaliencyStore.matches(out, full) else out.parent / f".{out.name}.new"
            SaliencyStore.create(work, full, meta, chunk_size=chunk_size)
        work = Path(group.broadcast(None if work is None else str(work)))
        store = SaliencyStore(work)
        mine = shard(store.n_chunks, group)
        # The passes per forward fixed when the store was created: the noise (drawn per
        # forward) stays the same on resume and on every worker, whatever memory is free.
        variants = with_passes(variants, store.manifest.get("passes_per_call", {}))
        for target in targets:
            head = list(model.targets).index(target)
            y_all = store.meta.loc[store.meta["target"] == target, "y"].to_numpy(np.float32)
            for name, variant in variants.items():
                if store.is_complete(target, name):
                    continue
                _run_pair(
                    store, target, name, variant, model, head, patches, ids, y_all if score == "target" else None,
                    mine, batch_size, device, precision, seed, progress,
                )  # fmt: skip
                group.barrier()
                if group.is_main:
                    store.mark_complete(target, name)
        group.barrier()
        if group.is_main and work != out:
            replace_dir(work, out)
        group.barrier()
    return SaliencyStore(out)


PASSES = {"smoothgrad": ("noise_batch", "n"), "integrated_gradients": ("step_batch", "steps")}
"""Methods that run several passes per image: (passes-per-forward parameter, passes)."""


def batched_passes(
    model: nn.Module,
    variants: Mapping[str, Mapping[str, Any]],
    batch_size: int,
    size: int,
    device: torch.device,
    precision: str,
) -> dict[str, int]:
    """Variant -> passes per forward, for multi-pass variants left at 0 (auto): as many as
    fit the memory budget (``histoxai.explain.methods.passes_per_call``)."""
    out = {}
    for name, variant in variants.items():
        key, total = PASSES.get(variant["method"], (None, None))
        params = variant.get("params") or {}
        if key is not None and not int(params.get(key, 0)):
            images = torch.zeros(batch_size, 3, size, size, device=device)
            with autocast(device, precision):
                out[name] = passes_per_call(model, images, int(params[total]))
    return out


def with_passes(variants: Mapping[str, Mapping[str, Any]], passes: Mapping[str, int]) -> dict[str, dict]:
    """Variants with their recorded passes per forward filled in."""
    out = {}
    for name, variant in variants.items():
        variant = {**variant, "params": dict(variant.get("params") or {})}
        if name in passes:
            variant["params"][PASSES[variant["method"]][0]] = int(passes[name])
        out[name] = variant
    return out


def fixed_mmap_threshold(nbytes: int = 128 * 1024) -> None:
    """Keep glibc's mmap threshold fixed (its default rises after each freed large block).

    Batches are allocated in one thread and freed in another (prefetch, writer); with the
    rising threshold they come from the heap arenas instead, which fragment: peak RSS of
    a gradient run grew 1.20x from 1,024 to 16,384 patches, 0.99x with the threshold
    fixed (``benchmarks/bench_explain_memory.py``). A no-op off glibc.
    """
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, nbytes)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def chunk_seed(seed: int, pair: str, chunk: int) -> int:
    """Seed of the noise of ``chunk`` of ``pair``: independent of which worker runs it."""
    return seed + zlib.crc32(f"{pair}/{chunk}".encode())


def quantise(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """On the device: (B, H, W) maps -> stored float16, per-map float32 power-of-two
    scales, and float64 statistics ``[abs_max, nonfinite, subnormal, nonzero]``
    (see ``histoxai.explain.store.quantise``)."""
    m = maps.float()
    finite = torch.isfinite(m)
    peak = torch.where(finite, m.abs(), 0.0).flatten(1).amax(dim=1)
    scale = torch.where(
        peak > 0, torch.exp2(torch.ceil(torch.log2(peak.clamp_min(1e-30) / SCALE_TOP))), torch.ones_like(peak)
    )
    stored = (m / scale[:, None, None]).half()
    a = stored.abs()
    stats = torch.stack(
        [
            peak.max().double(),
            (~finite).sum().double(),
            ((a > 0) & (a < FLOAT16_TINY)).sum().double(),
            (a > 0).sum().double(),
        ]
    )
    return stored, scale, stats


def _run_pair(
    store: SaliencyStore,
    target: str,
    name: str,
    variant: Mapping[str, Any],
    model: nn.Module,
    head: int,
    patches: PatchStore,
    ids: np.ndarray,
    y_all: np.ndarray | None,
    chunks: range,
    batch_size: int,
    device: torch.device,
    precision: str,
    seed: int,
    progress: bool,
) -> None:
    """This worker's chunks of one pair that are not done yet."""
    pair = map_name(target, name)
    done = store.chunk_table(target, name)[:, 0]
    batches = [
        (c, s, min(s + batch_size, rows.stop))
        for c in chunks
        if not done[c]
        for rows in [store.chunk_rows(c)]
        for s in range(rows.start, rows.stop, batch_size)
    ]
    if not batches:
        return
    pin = device.type == "cuda"

    def load(batch: tuple[int, int, int]) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(patches.images(ids[batch[1] : batch[2]])))
        return t.pin_memory() if pin else t

    score_fn = SCORES[score_name(store)]
    with ThreadPoolExecutor(1) as loader, Writer(store, target, name) as writer:
        pending = loader.submit(load, batches[0])
        bar = tqdm(total=len(batches), desc=pair, disable=not progress, leave=False)
        for i, (c, s, e) in enumerate(batches):
            t = pending.result()
            if i + 1 < len(batches):
                pending = loader.submit(load, batches[i + 1])
            rows = store.chunk_rows(c)
            if s == rows.start:
                torch.manual_seed(chunk_seed(seed, pair, c))
                start, acc = time.perf_counter(), torch.zeros(4, dtype=torch.float64, device=device)
            x = t.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
            y = torch.from_numpy(y_all[s:e]).to(device) if y_all is not None else None
            with autocast(device, precision):
                m = run_variant(variant, model, x, head, score_fn, y)
            stored, scale, stats = quantise(m)
            acc = torch.stack([torch.maximum(acc[0], stats[0]), *(acc[1:] + stats[1:])])
            writer.rows(s, stored, scale)
            if e == rows.stop:
                writer.finish(c, [time.perf_counter() - start, *acc.tolist()])  # one sync per chunk
            bar.update()
        bar.close()


def score_name(store: SaliencyStore) -> str:
    return str(store.manifest.get("score", "higher"))


class Writer:
    """Background writer: copies (started on the device's stream) land in the store in
    order; a chunk is marked done after its rows. An error is raised in the caller."""

    def __init__(self, store: SaliencyStore, target: str, variant: str, depth: int = 4):
        self.store, self.target, self.variant = store, target, variant
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.queue.put(None)
        self.thread.join()
        if self.error is not None and exc[0] is None:
            raise self.error

    def _put(self, item: tuple) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(item)

    def rows(self, start: int, stored: torch.Tensor, scale: torch.Tensor) -> None:
        stored_host = stored.to("cpu", non_blocking=True)
        scale_host = scale.to("cpu", non_blocking=True)
        event = None
        if stored.device.type == "cuda":
            event = torch.cuda.Event()
            event.record()
        self._put(("rows", start, stored_host, scale_host, event))

    def finish(self, chunk: int, stats: list[float]) -> None:
        self._put(("chunk", chunk, stats))

    def _loop(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is not None:
                continue  # drain
            try:
                if item[0] == "rows":
                    _, start, stored, scale, event = item
                    if event is not None:
                        event.synchronize()
                    self.store.write_rows(self.target, self.variant, start, stored.numpy(), scale.numpy())
                else:
                    self.store.finish_chunk(self.target, self.variant, item[1], item[2])
            except BaseException as err:  # noqa: BLE001 - handed to the caller
                self.error = err
