"""GPU check: the MICROMEN-scale path end to end on one device, with its numbers.

Builds a phantom of MICROMEN geometry (16 samples, 360 px patches at 0.1778 µm/px,
>= 2,000 patches), trains EfficientNetV2-S from random init for a few hundred steps
(bf16 autocast, channels-last, AdamW; batches resident on the device, so the figure is
the model's), then runs every saliency method through the runner
(``histoxai.explain.runner.explain_patches``: prefetch, device-side float16 conversion,
background writer, chunked store) on every patch for the MD head. Prints train images/s,
maps/s per method, GPU utilisation (``nvidia-smi`` sampled twice a second), peak device
memory, and each method's fraction of its FLOP floor: the FLOPs its passes need per map
(forward + backward per noise copy / step, forward per occlusion window; counted by
``torch.utils.flop_counter.FlopCounterMode``) x maps/s over the device's measured dense
matmul rate in the same precision. Nothing is downloaded.

``--shrink`` (or ``HISTOXAI_GPU_CHECK_SHRINK=1``): the same path on a CPU in about a
minute (2 samples of 3 x 3 patches of 64 px, resnet10t, 5 steps, 4 noise copies and
integration steps), which CI runs.

Run::

    benchmarks/gpu_check.sh              # on the GPU machine
    benchmarks/gpu_check.sh --shrink     # anywhere
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from histoxai.config import ModelConfig, PhantomConfig, SplitConfig, VariantConfig
from histoxai.data.phantom import render_sample, sample_scene
from histoxai.data.splits import assign_splits
from histoxai.data.store import write_store
from histoxai.explain.methods import resolve_variants
from histoxai.explain.runner import autocast, explain_patches
from histoxai.models import build_regressor


def variants(size: int, passes: int = 30) -> dict[str, dict]:
    """Every method (``passes`` noise copies / integration steps); occlusion with windows
    of 1/8 patch (8 x 8 positions) to fit the check."""
    w = max(size // 8, 2)
    return resolve_variants(
        [
            "gradcam", "gradcampp", "hirescam", "layercam", "gradient",
            VariantConfig("smoothgrad", "smoothgrad", {"n": passes, "sigma": 0.2}),
            VariantConfig("integrated_gradients", "integrated_gradients", {"steps": passes}),
            VariantConfig("occlusion", "occlusion", {"window": w, "stride": w}),
        ]
    )  # fmt: skip


class Utilisation:
    """Mean GPU utilisation (%) from ``nvidia-smi`` while the block runs (None without one)."""

    def __init__(self, device: torch.device):
        self.on = device.type == "cuda" and shutil.which("nvidia-smi") is not None
        self.index = device.index or 0
        self.samples: list[float] = []

    def _poll(self) -> None:
        cmd = [
            "nvidia-smi",
            f"--id={self.index}",
            "--query-gpu=utilization.gpu",
            "--format=csv,noheader,nounits",
        ]
        while not self.stop.wait(0.5):
            try:
                self.samples.append(
                    float(subprocess.run(cmd, capture_output=True, text=True).stdout.split()[0])
                )
            except (OSError, ValueError, IndexError):
                pass

    def __enter__(self) -> Utilisation:
        self.stop = threading.Event()
        if self.on:
            self.thread = threading.Thread(target=self._poll, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.on:
            self.thread.join()

    @property
    def mean(self) -> str:
        return f"{np.mean(self.samples):.0f} %" if self.samples else "n/a"


def render(cfg: PhantomConfig, size: int, index: int):
    """One sample's block (a process each: the phantom's rendering is single-threaded)."""
    return render_sample(sample_scene(cfg, size, 0, index), size)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory(device: torch.device) -> str:
    if device.type != "cuda":
        return "n/a (cpu)"
    return f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB"


def matmul_rate(device: torch.device, precision: str) -> float:
    """Dense matmul FLOP/s in the autocast precision: the floor's denominator."""
    n = 8192 if device.type == "cuda" else 1024
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def pass_flops(model, images, precision, device) -> tuple[float, float]:
    """FLOPs per image of one forward, and of one forward + backward to the input."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad(), autocast(device, precision):
        model(images)
    forward = counter.get_total_flops() / len(images)
    # Weights frozen while counting: the methods ask autograd for the input gradient only
    # (no weight-gradient kernels run), and FlopCounterMode counts grouped convolutions'
    # weight gradients about 250x too high (EfficientNetV2-S at 360 px: 223 GFLOP with
    # weight gradients, 31 without).
    trainable = [p for p in model.parameters() if p.requires_grad]
    model.requires_grad_(False)
    try:
        counter = FlopCounterMode(display=False)
        with counter, autocast(device, precision):
            x = images.detach().requires_grad_(True)
            model(x)[:, 0].float().sum().backward()
    finally:
        for p in trainable:
            p.requires_grad_(True)
    return forward, counter.get_total_flops() / len(images)


def floor_flops(variant: dict, size: int, forward: float, both: float) -> float:
    """FLOPs per map of the method's passes: forward + backward per noise copy or step
    (one for CAMs and the gradient), forward only per occlusion window (and the original)."""
    p, method = variant["params"], variant["method"]
    if method == "smoothgrad":
        return both * p["n"]
    if method == "integrated_gradients":
        return both * p["steps"]
    if method == "occlusion":
        return forward * (((size - p["window"]) // p["stride"] + 1) ** 2 + 1)
    return both


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--shrink", action="store_true", default=os.environ.get("HISTOXAI_GPU_CHECK_SHRINK") == "1"
    )
    parser.add_argument("--workdir", default="", help="where the phantom and maps go (default: a temp dir)")
    parser.add_argument(
        "--samples", type=int, default=0, help="phantom samples (default 16; 2 with --shrink)"
    )
    parser.add_argument(
        "--passes", type=int, default=0, help="noise copies / steps (default 30; 4 with --shrink)"
    )
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.shrink else "cpu")
    if args.shrink:
        size, samples, grid, um, backbone, steps, batch, xbatch, passes = (
            64,
            2,
            (3, 3),
            1.0,
            "resnet10t",
            5,
            8,
            8,
            4,
        )
    else:
        size, samples, grid, um, backbone, steps, batch, xbatch, passes = (
            360,
            16,
            (12, 12),
            0.1778,
            "tf_efficientnetv2_s",
            300,
            64,
            32,
            30,
        )
    samples, passes = args.samples or samples, args.passes or passes
    precision = "bf16" if device.type == "cuda" else "fp32"
    torch.manual_seed(0)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="gpu_check-"))
    t0 = time.perf_counter()

    # 1. phantom of MICROMEN geometry, samples rendered in parallel; no dataset card (its
    #    image-oracle ceilings are the slow part of `generate_phantom` and nothing here reads them)
    cfg = PhantomConfig(n_samples=samples, grid_vox=grid, um_per_px=um)
    with ProcessPoolExecutor(min(samples, os.cpu_count() or 1)) as pool:
        blocks = list(pool.map(partial(render, cfg, size), range(samples)))
    card = {"source": "phantom (gpu_check)"}
    store = write_store(work / "patches", blocks, card, partial(assign_splits, cfg=SplitConfig(), seed=0))
    del blocks
    print(
        f"phantom: {len(store)} patches of {size} px from {samples} samples in {time.perf_counter() - t0:.0f} s"
    )

    # 2. training from random init, device-resident batches
    targets = ("md", "fa")
    y_all = store.index[list(targets)].to_numpy(np.float32)
    mean, std = y_all.mean(axis=0), y_all.std(axis=0) + 1e-6
    model = build_regressor(ModelConfig(backbone=backbone, targets=targets), mean.tolist(), std.tolist())
    model = model.to(device).train()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats(device)
    pool_ids = np.arange(min(len(store), 1024))
    pool = torch.from_numpy(store.images(pool_ids)).to(device).permute(0, 3, 1, 2)
    pool_y = torch.from_numpy(y_all[pool_ids]).to(device)
    scale = torch.from_numpy(std).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator(device=device).manual_seed(0)

    def step() -> torch.Tensor:
        idx = torch.randint(0, len(pool), (batch,), device=device, generator=gen)
        x = pool[idx].float().div_(255.0).contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            loss = (((model(x).float() - pool_y[idx]) / scale) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()  # no host sync per step

    for _ in range(min(3, steps)):
        step()  # warm-up: cudnn autotune, allocator
    sync(device)
    with Utilisation(device) as util:
        start = time.perf_counter()
        for _ in range(steps):
            loss = step()
        sync(device)
        seconds = time.perf_counter() - start
    print(
        f"train: {backbone} random init, {steps} steps of {batch} ({precision}, {device}): "
        f"{steps * batch / seconds:.1f} images/s, final loss {float(loss):.3f}, GPU util {util.mean}, "
        f"peak memory {peak_memory(device)}"
    )

    # 3. every saliency method over every patch, through the runner
    model.eval()
    opt.zero_grad(set_to_none=True)  # the gradients' memory back for the saliency passes
    all_variants = variants(size, passes)
    rate = matmul_rate(device, precision)
    forward, both = pass_flops(model, torch.rand(2, 3, size, size, device=device), precision, device)
    model.zero_grad(set_to_none=True)
    head = f"{'method':<22}{'maps/s':>10}{'GFLOP/map':>11}{'of floor':>10}{'GPU util':>10}{'peak mem':>12}"
    print(
        f"explain: {len(store)} patches, head md, matmul rate {rate / 1e12:.2f} TFLOP/s ({precision})\n{head}"
    )
    print("-" * len(head))
    for name, variant in all_variants.items():
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        with Utilisation(device) as util:
            sal = explain_patches(
                model, store, store.ids(), work / "saliency" / name, {name: variant},
                targets=["md"], batch_size=xbatch, device=device, precision="auto", progress=False,
            )  # fmt: skip
        maps_per_s = sal.manifest["timings"][f"md__{name}"]["maps_per_s"]
        flops = floor_flops(variant, size, forward, both)
        print(
            f"{name:<22}{maps_per_s:>10.1f}{flops / 1e9:>11.2f}{flops * maps_per_s / rate:>10.2f}"
            f"{util.mean:>10}{peak_memory(device):>12}"
        )
    print(f"gpu_check: done in {time.perf_counter() - t0:.0f} s (work dir {work})")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
