"""Peak host memory of ``histoxai explain`` does not grow with the number of patches.

For N = 1,024 and 16,384 patches at 128 px, every method runs through the runner
(``explain_patches``) from a patch store (``write_store``'s format: memory-mappable
``.npy`` per sample, random-texture patches) into a fresh saliency store, each in a fresh
process whose peak resident set (``VmHWM``: heap, torch, and any mapped file pages it
touched) is read at the end. A tiny CNN and few noise samples keep it to minutes on a
CPU: the point is memory against N, not speed. Prints MiB per (method, N) and the ratio
16,384 / 1,024 (aim: <= 1.10).

Run::

    .venv/bin/python benchmarks/bench_explain_memory.py [--sizes 1024 16384] [--size 128] [--methods gradient]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from histoxai.config import VariantConfig
from histoxai.data.store import PatchStore, SampleBlock, write_store
from histoxai.explain.methods import resolve_variants
from histoxai.explain.runner import explain_patches

VARIANTS = [
    VariantConfig("gradcam", "gradcam", {"layer": -1}),
    VariantConfig("gradcampp", "gradcampp", {"layer": -1}),
    VariantConfig("hirescam", "hirescam", {"layer": -1}),
    VariantConfig("layercam", "layercam", {"layers": [-2, -1]}),
    "gradient",
    VariantConfig("smoothgrad", "smoothgrad", {"n": 4}),
    VariantConfig("integrated_gradients", "integrated_gradients", {"steps": 4}),
    VariantConfig("occlusion", "occlusion", {"window": 32, "stride": 32}),
    VariantConfig("occlusion_w64", "occlusion", {"window": 64, "stride": 64}),  # 4 windows: quicker
]


class TinyCNN(nn.Module):
    """The regressor contract (``targets``, a backbone with timm-style ``feature_info``)."""

    def __init__(self) -> None:
        super().__init__()
        self.targets = ("md",)
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 8, 5, stride=4, padding=2),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.backbone.feature_info = [{"module": "1"}, {"module": "3"}]
        self.head = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x).mean(dim=(2, 3)))


PER_SAMPLE = 2048


def build_patches(root: Path, n: int, size: int) -> None:
    """A patch store of ``n`` random-texture patches of ``size`` px, in samples of 2,048."""
    rng = np.random.default_rng(0)

    def blocks():
        for k, start in enumerate(range(0, n, PER_SAMPLE)):
            m = min(PER_SAMPLE, n - start)
            images = rng.integers(0, 256, (m, size, size, 3), dtype=np.uint8)
            table = pd.DataFrame(
                {"row": np.arange(m) // 64, "col": np.arange(m) % 64, "md": rng.uniform(0.5, 1.5, m)}
            )
            yield SampleBlock(f"s{k + 1}", images, table)

    write_store(root, blocks(), {"source": "bench"}, lambda index: index.assign(split_random="test"))


def peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def measure(patches: Path, name: str, batch_size: int, chunk_size: int) -> float:
    """Peak RSS (MiB) of one process explaining every patch of ``patches`` with variant ``name``."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    variants = resolve_variants(VARIANTS)
    store = PatchStore(patches)
    with tempfile.TemporaryDirectory() as tmp:
        explain_patches(
            TinyCNN().eval(), store, store.ids(), Path(tmp) / "sal", {name: variants[name]},
            batch_size=batch_size, chunk_size=chunk_size, device="cpu", progress=False,
        )  # fmt: skip
    return peak_mib()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 16384])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--methods", nargs="*", default=None)
    parser.add_argument("--jobs", type=int, default=1, help="measuring processes run at once")
    parser.add_argument("--root", type=Path, default=None, help="keep the patch stores here and reuse them")
    parser.add_argument("--one", nargs=2, metavar=("PATCHES", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(measure(Path(args.one[0]), args.one[1], args.batch_size, args.chunk_size))
        return
    names = args.methods or list(resolve_variants(VARIANTS))
    peaks: dict[str, dict[int, float]] = {name: {} for name in names}
    with tempfile.TemporaryDirectory(prefix="bench-explain-memory-") as tmp:
        root = args.root or Path(tmp)
        for n in args.sizes:
            if not (root / f"patches{n}" / "index.parquet").is_file():
                build_patches(root / f"patches{n}", n, args.size)

        def one(name: str, n: int) -> None:
            # each measurement in its own process: its VmHWM is that run's alone
            cmd = [sys.executable, __file__, "--one", f"{root}/patches{n}", name,
                   "--batch-size", str(args.batch_size), "--chunk-size", str(args.chunk_size)]  # fmt: skip
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            peaks[name][n] = float(out.split()[-1])
            print(f"  {name:<22} N={n:>6}: peak {peaks[name][n]:8.1f} MiB", flush=True)

        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(lambda job: one(*job), [(name, n) for name in names for n in args.sizes]))
    lo, hi = min(args.sizes), max(args.sizes)
    head = f"{'method':<22}{f'N={lo} MiB':>14}{f'N={hi} MiB':>14}{'ratio':>8}"
    print(f"\npeak host RSS, {args.size} px, batch {args.batch_size}, chunk {args.chunk_size}\n{head}")
    print("-" * len(head))
    for name, p in peaks.items():
        print(f"{name:<22}{p[lo]:>14.1f}{p[hi]:>14.1f}{p[hi] / p[lo]:>8.3f}")
    worst = max(p[hi] / p[lo] for p in peaks.values())
    print(f"worst ratio {worst:.3f} (aim <= 1.10); maps of N={hi} at {args.size} px: "
          f"{hi * args.size**2 * 2 / 2**20:.0f} MiB per pair on disk")  # fmt: skip


if __name__ == "__main__":
    main()
