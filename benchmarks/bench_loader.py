"""Does data loading keep the model busy? Training throughput vs model-only throughput.

Both loops run the same model, optimizer and batch size for the same number of steps:

- ``model only``: batches already in memory as float tensors (no loading, no augmentation);
- ``training``: the real input path of ``histoxai.training.fit``: ``PatchBatches`` gathering
  from the memory-mapped patch store, uint8 -> float, batched augmentations.

Prints images/s for both and their ratio (floor 0.90). Uses ``data/patches`` when present,
else builds the phantom of ``params.yaml`` in a temporary folder. ``--precision bf16``
measures bf16 autocast (compare with fp32 to decide ``train.precision`` on a CPU).

Run::

    .venv/bin/python benchmarks/bench_loader.py
    .venv/bin/python benchmarks/bench_loader.py --workers 1 --precision bf16 --threads 1
"""

from __future__ import annotations

import argparse
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from histoxai.config import load_config
from histoxai.data.datasets import PatchBatches, to_model_input
from histoxai.data.store import PatchStore
from histoxai.models import build_regressor
from histoxai.training.augment import augment_batch
from histoxai.training.fit import weighted_loss
from histoxai.training.runtime import autocast, resolve_precision

FLOOR = 0.90


def train_step(model, net, opt, weights, device, amp):
    """One optimizer step of ``model`` run through ``net`` (itself, or a compiled wrapper)."""

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        with autocast(device, amp):
            z = model.standardize(net(x))
        loss = weighted_loss(z, model.standardize(y), weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def open_store(cfg) -> PatchStore:
    if (Path(cfg.base.patches_dir) / "index.parquet").is_file():
        return PatchStore(cfg.base.patches_dir)
    from histoxai.data.phantom import generate_phantom
    from histoxai.data.splits import assign_splits
    from histoxai.data.store import write_store

    blocks, card = generate_phantom(cfg.data.phantom, cfg.data.patch_size_px, cfg.base.seed)
    root = Path(tempfile.mkdtemp(prefix="bench-loader-")) / "patches"
    return write_store(root, blocks, card, partial(assign_splits, cfg=cfg.data.split, seed=cfg.base.seed))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--workers", type=int, default=None, help="loader threads (default: train.num_workers)")
    p.add_argument("--precision", default=None, help="fp32 | bf16 (default: train.precision)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = p.parse_args()
    cfg = load_config(args.params, args.overrides)
    if args.threads:
        torch.set_num_threads(args.threads)
    store = open_store(cfg)
    device = torch.device("cpu")
    amp = resolve_precision(args.precision or cfg.train.precision, device)
    targets = [t for t in cfg.model.targets if t in store.targets]
    ids = store.ids("train", cfg.data.split.scheme)
    model = build_regressor(cfg.model, [0.0] * len(targets), [1.0] * len(targets))
    model = model.to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    weights = torch.ones(len(targets))
    gen = torch.Generator().manual_seed(0)

    step = train_step(model, model, opt, weights, device, amp)

    workers = cfg.train.num_workers if args.workers is None else args.workers
    loader = PatchBatches(
        store, ids, targets, cfg.train.batch_size, shuffle=True, drop_last=True, workers=workers
    )
    n = min(args.steps, len(loader))
    cached = []
    for images, y, _ in loader:
        cached.append((to_model_input(images, device, cfg.train.channels_last), y))
        if len(cached) == n:
            break
    for x, y in cached[:2]:  # warm-up (allocator, oneDNN primitives)
        step(x, y)

    rows = []
    for rep in range(2):  # interleaved, so a busy neighbour slows both alike
        t = time.perf_counter()
        for x, y in cached:
            step(x, y)
        model_only = n * cfg.train.batch_size / (time.perf_counter() - t)
        loader.set_epoch(rep + 1)
        t, done = time.perf_counter(), 0
        for images, y, _ in loader:
            x = augment_batch(to_model_input(images, device, cfg.train.channels_last), cfg.train.augment, gen)
            step(x, y)
            done += 1
            if done == n:
                break
        training = n * cfg.train.batch_size / (time.perf_counter() - t)
        rows.append((model_only, training))
    model_only, training = np.median(np.array(rows), axis=0)
    ratio = training / model_only
    print(
        f"backbone {cfg.model.backbone}, {store.patch_size} px, batch {cfg.train.batch_size}, {n} steps, "
        f"precision {args.precision or cfg.train.precision} ({'fp32' if amp is None else amp}), "
        f"loader workers {workers}, torch threads {torch.get_num_threads()}"
    )
    print(f"{'loop':<28}{'images/s':>10}")
    print(f"{'model only (in memory)':<28}{model_only:>10.1f}")
    print(f"{'training (store+augment)':<28}{training:>10.1f}")
    print(
        f"ratio training/model-only: {ratio:.3f} (floor {FLOOR:.2f}) {'OK' if ratio >= FLOOR else 'BELOW FLOOR'}"
    )


if __name__ == "__main__":
    main()
