"""Peak host memory of ``histoxai explain`` does not grow with the number of patches.

For N = 1,024 and 16,384 patches at 128 px, every method runs through the runner
(``explain_patches``) into a fresh saliency store, each in a fresh process whose peak
resident set (``VmHWM``: heap, torch, and any mapped file pages) is read at the end. A tiny CNN and a synthetic patch source (images made from the patch id, no file)
keep it to minutes on a CPU and keep page cache of a patch file out of the figure: what
is measured is what the runner and the store hold. Prints MiB per (method, N) and the
ratio 16,384 / 1,024 (aim: <= 1.10).

Run::

    .venv/bin/python benchmarks/bench_explain_memory.py [--sizes 1024 16384] [--size 128]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from histoxai.config import VariantConfig
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


class SyntheticPatches:
    """The parts of ``PatchStore`` the runner uses; patch ``i`` is noise seeded by ``i``."""

    def __init__(self, n: int, size: int):
        self.root, self.patch_size = Path("synthetic"), size
        self.index = pd.DataFrame(
            {
                "patch_id": np.arange(n),
                "sample": "s1",
                "row": np.arange(n) // 128,
                "col": np.arange(n) % 128,
                "split_random": "test",
                "md": np.linspace(0.5, 1.5, n),
            }
        )

    def images(self, ids) -> np.ndarray:
        ids = np.asarray(ids)
        rng = np.random.default_rng(int(ids[0]) if len(ids) else 0)
        return rng.integers(0, 256, (len(ids), self.patch_size, self.patch_size, 3), dtype=np.uint8)


def peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def measure(n: int, name: str, size: int, batch_size: int, chunk_size: int) -> float:
    """Peak RSS (MiB) of one process explaining ``n`` patches with variant ``name``."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    variants = resolve_variants(VARIANTS)
    with tempfile.TemporaryDirectory() as tmp:
        explain_patches(
            TinyCNN().eval(), SyntheticPatches(n, size), np.arange(n), Path(tmp) / "sal", {name: variants[name]},
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
    parser.add_argument("--one", nargs=2, metavar=("N", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(measure(int(args.one[0]), args.one[1], args.size, args.batch_size, args.chunk_size))
        return
    names = args.methods or list(resolve_variants(VARIANTS))
    peaks: dict[str, dict[int, float]] = {name: {} for name in names}
    for name in names:
        for n in args.sizes:
            cmd = [sys.executable, __file__, "--one", str(n), name, "--size", str(args.size),
                   "--batch-size", str(args.batch_size), "--chunk-size", str(args.chunk_size)]  # fmt: skip
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            peaks[name][n] = float(out.split()[-1])
            print(f"  {name:<22} N={n:>6}: peak {peaks[name][n]:8.1f} MiB", flush=True)
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
