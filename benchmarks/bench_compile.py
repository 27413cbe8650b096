"""Does ``train.compile`` help? Training steps per second, eager vs ``torch.compile``.

Both run the same model, optimizer, precision and cached batches (the patch store of
``params.yaml``, as ``bench_loader.py``); the compiled model is compiled and warmed up
first (its compile time is printed apart), then eager and compiled blocks alternate so a
busy neighbour slows both alike. Prints images/s of each and the ratio compiled/eager: above
1 the setting helps on this device. On CPU it needs a C++ compiler (inductor).

Run::

    .venv/bin/python benchmarks/bench_compile.py [--steps 10] [--precision bf16|fp32] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_loader import open_store, train_step  # noqa: E402

from histoxai.config import load_config  # noqa: E402
from histoxai.data.datasets import PatchBatches, to_model_input  # noqa: E402
from histoxai.models import build_regressor  # noqa: E402
from histoxai.training.runtime import resolve_device, resolve_precision  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--precision", default=None, help="fp32 | bf16 (default: train.precision)")
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    cfg = load_config(args.params, args.overrides)
    store = open_store(cfg)
    device = resolve_device(args.device)
    amp = resolve_precision(args.precision or cfg.train.precision, device)
    targets = [t for t in cfg.model.targets if t in store.targets]
    model = build_regressor(cfg.model, [0.0] * len(targets), [1.0] * len(targets)).to(device)
    model = model.to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    weights = torch.ones(len(targets), device=device)
    loader = PatchBatches(
        store, store.ids("train", cfg.data.split.scheme), targets, cfg.train.batch_size, drop_last=True
    )
    batches = []
    for images, y, _ in loader:
        batches.append((to_model_input(images, device, True), y.to(device)))
        if len(batches) == args.steps:
            break

    eager = train_step(model, model, opt, weights, device, amp)
    compiled = train_step(model, torch.compile(model), opt, weights, device, amp)
    t = time.perf_counter()
    for x, y in batches[:2]:
        compiled(x, y)
    compile_s = time.perf_counter() - t
    for x, y in batches[:2]:
        eager(x, y)

    def rate(step) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for x, y in batches:
            step(x, y)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return len(batches) * cfg.train.batch_size / (time.perf_counter() - t)

    rows = np.array([(rate(eager), rate(compiled)) for _ in range(3)])
    e, c = np.median(rows, axis=0)
    print(
        f"backbone {cfg.model.backbone}, {store.patch_size} px, batch {cfg.train.batch_size}, {len(batches)} steps x 3, "
        f"device {device}, precision {'fp32' if amp is None else amp}, torch threads {torch.get_num_threads()}"
    )
    print(f"compile + first 2 steps: {compile_s:.1f} s")
    print(f"{'eager':<10}{e:>10.1f} images/s\n{'compiled':<10}{c:>10.1f} images/s")
    print(f"ratio compiled/eager: {c / e:.2f} ({'helps' if c > e * 1.05 else 'does not help'} here)")


if __name__ == "__main__":
    main()
