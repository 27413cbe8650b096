"""Phantom generation speed against the 300 patches/s floor.

Run::

    .venv/bin/python benchmarks/bench_phantom.py                    # defaults: 6 x 20x20 voxels
    .venv/bin/python benchmarks/bench_phantom.py --sizes 32 64 --repeats 3 --montage /tmp/phantom.png
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from histoxai.config import PhantomConfig
from histoxai.data.phantom import generate_phantom, save_montage

FLOOR = 300.0  # patches/s at 64 px on the 2-core development machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64], help="patch sizes (px)")
    parser.add_argument("--samples", type=int, default=6)
    parser.add_argument("--grid", type=int, default=20, help="voxels per side")
    parser.add_argument("--repeats", type=int, default=3, help="runs per size; the best is reported")
    parser.add_argument("--montage", default="", help="also save a montage PNG of the last run here")
    args = parser.parse_args()

    cfg = dataclasses.replace(PhantomConfig(), n_samples=args.samples, grid_vox=(args.grid, args.grid))
    print(f"{'patch px':>8} {'patches':>8} {'best s':>8} {'patches/s':>10} {'vs 300/s floor':>15}")
    for size in args.sizes:
        times = []
        for repeat in range(args.repeats):
            start = time.perf_counter()
            blocks, _ = generate_phantom(cfg, size, seed=repeat)
            times.append(time.perf_counter() - start)
        n = sum(len(b.table) for b in blocks)
        rate = n / min(times)
        print(f"{size:>8} {n:>8} {min(times):>8.2f} {rate:>10.0f} {rate / FLOOR:>14.2f}x")
    if args.montage:
        print(f"montage: {save_montage(blocks, args.montage)}")


if __name__ == "__main__":
    main()
