"""Phantom rendering speed against the 300 patches/s floor (128 px, MICROMEN geometry).

Reports both wall-clock and CPU-time rates (one thread): on a shared machine the CPU
rate is the one that says what the code costs. The card (image-oracle ceilings) is
timed separately: it is built once per ``histoxai prepare``.

Run::

    .venv/bin/python benchmarks/bench_phantom.py                       # micromen + demo, 128 px
    .venv/bin/python benchmarks/bench_phantom.py --geometry micromen --sizes 128 256 --montage /tmp/p.png
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from histoxai.config import PhantomConfig
from histoxai.data.phantom import render_sample, sample_scene, save_montage

FLOOR = 300.0  # patches/s at 128 px, MICROMEN geometry, on the 2-core development machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128], help="patch sizes (px)")
    parser.add_argument("--geometry", nargs="+", default=["micromen", "demo"])
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--grid", type=int, default=14, help="voxels per side")
    parser.add_argument("--repeats", type=int, default=2, help="runs per setting; the best is reported")
    parser.add_argument("--montage", default="", help="also save a montage PNG of the last run here")
    args = parser.parse_args()

    print(
        f"{'geometry':>9} {'px':>4} {'patches':>8} {'wall s':>7} {'cpu s':>7} "
        f"{'wall /s':>8} {'cpu /s':>8} {'cpu vs 300/s':>13}"
    )
    for geometry in args.geometry:
        cfg = dataclasses.replace(PhantomConfig(), geometry=geometry, grid_vox=(args.grid, args.grid))
        for size in args.sizes:
            walls, cpus = [], []
            for repeat in range(args.repeats):
                wall, cpu = time.perf_counter(), time.process_time()
                blocks = [
                    render_sample(sample_scene(cfg, size, repeat, i), size) for i in range(args.samples)
                ]
                walls.append(time.perf_counter() - wall)
                cpus.append(time.process_time() - cpu)
            n = sum(len(b.table) for b in blocks)
            w, c = min(walls), min(cpus)
            print(
                f"{geometry:>9} {size:>4} {n:>8} {w:>7.2f} {c:>7.2f} {n / w:>8.0f} {n / c:>8.0f} "
                f"{n / c / FLOOR:>12.2f}x"
            )
    if args.montage:
        print(f"montage: {save_montage(blocks, args.montage)}")


if __name__ == "__main__":
    main()
