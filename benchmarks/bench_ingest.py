"""MICROMEN ingestion: peak memory must not grow with slide size (HE is read in tiles).

Builds two synthetic MICROMEN samples in MATLAB v7.3 layout, the large one with 2x the
MR grid per side at the same HE pixels per voxel (4x the slide area, as a bigger slide
in the real data), ingests each in a fresh subprocess and prints the peak memory of
the ingestion: numpy/Python allocations (``tracemalloc``), the same less the output
patches (``work MB``: what reading and resampling need), and the peak RSS (absolute,
and its growth over the process after imports). With tiles the working memory should
stay flat (~1x); the whole-slide read (``strip_rows_px`` larger than the slide) is the
peer (~4x). The output (one sample's patches, handed to the store) grows with the
number of voxels by design.

Run::

    .venv/bin/python benchmarks/bench_ingest.py                  # 24x24 vs 48x48 voxels of 128 px
    .venv/bin/python benchmarks/bench_ingest.py --grid 20 --block 400 --strip 4096 --patch 64
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.fixtures.micromen_fixture import write_v73  # noqa: E402

CHILD = """
import json, sys, time, tracemalloc
from pathlib import Path
from histoxai.config import MicromenConfig
from histoxai.data.micromen import micromen_blocks

def status(key):  # kB; VmHWM is the peak RSS of this process image (not inherited from the parent)
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(key))
    return int(line.split()[1])

root, strip, patch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
base = status("VmRSS:")
Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS to the current RSS
tracemalloc.start()
start = time.perf_counter()
cfg = MicromenConfig(root=root, strip_rows_px=strip, cc_source="none")
n = sum(len(b.table) for b in micromen_blocks(cfg, patch, {}))
seconds = time.perf_counter() - start
traced = tracemalloc.get_traced_memory()[1]
peak = status("VmHWM:")
out = {"voxels": n, "traced_mb": traced / 2**20, "peak_rss_mb": peak / 2**10, "rss_mb": (peak - base) / 2**10}
print(json.dumps({**out, "seconds": seconds}))
"""


def build_slide(root: Path, grid: int, block: int, seed: int) -> float:
    """One sample ``<root>/1`` with a (grid*block)^2 px HE written column strip by strip; HE MB."""
    rng = np.random.default_rng(seed)
    d = root / "1" / "coreg_fine" / "ver1"
    maps = {
        "MD": rng.uniform(0.2, 2.0, (grid, grid)),
        "FA": rng.uniform(0, 1, (grid, grid)),
        "FAIP": rng.uniform(0, 1, (grid, grid)),
        "ROI": np.ones((grid, grid), np.uint8),
    }
    write_v73(d / "MR.mat", {"MR": maps})
    side = grid * block
    write_v73(
        d / "HE_mask.mat",
        {"HE_mask": np.ones((side, side), np.uint8), "dHE_mask": np.ones((grid, grid), np.uint8)},
    )
    write_v73(d / "HE.mat", {"HE": np.zeros((1, 1, 3), np.uint8)})
    with h5py.File(d / "HE.mat", "r+") as f:  # the real HE, streamed in MATLAB's (3, W, H) layout
        del f["HE"]
        ds = f.create_dataset("HE", (3, side, side), np.uint8, chunks=(3, 256, 256))
        ds.attrs["MATLAB_class"] = np.bytes_("uint8")
        for c0 in range(0, side, 512):
            w = min(512, side - c0)
            ds[:, c0 : c0 + w, :] = rng.integers(60, 250, (3, w, side), dtype=np.uint8)
    return 3 * side * side / 2**20


def ingest(root: Path, strip: int, patch: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(root), str(strip), str(patch)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grid", type=int, default=24, help="voxels per side of the small slide (large: 2x)")
    parser.add_argument("--block", type=int, default=128, help="HE px per voxel side")
    parser.add_argument("--strip", type=int, default=512, help="data.micromen.strip_rows_px")
    parser.add_argument("--patch", type=int, default=32, help="patch_size_px")
    args = parser.parse_args()
    slides = {"small": args.grid, "large": 2 * args.grid}
    with tempfile.TemporaryDirectory() as tmp:
        he_mb = {}
        for name, grid in slides.items():
            start = time.perf_counter()
            he_mb[name] = build_slide(Path(tmp) / name, grid, args.block, seed=grid)
            took = time.perf_counter() - start
            print(
                f"built {name}: {grid}x{grid} voxels of {args.block} px, HE {he_mb[name]:.0f} MB ({took:.1f} s)"
            )
        print(
            f"\n{'read':>5} {'slide':>5} {'HE MB':>6} {'voxels':>6} {'out MB':>6} {'traced MB':>9} "
            f"{'work MB':>7} {'RSS MB':>6} {'RSS+ MB':>7} {'s':>5}"
        )
        for mode, strip in (("tiles", args.strip), ("whole", 10**7)):
            work = {}
            for name in slides:
                r = ingest(Path(tmp) / name, strip, args.patch)
                out_mb = r["voxels"] * args.patch**2 * 3 / 2**20
                work[name] = (r["traced_mb"], r["traced_mb"] - out_mb)
                print(
                    f"{mode:>5} {name:>5} {he_mb[name]:>6.0f} {r['voxels']:>6} {out_mb:>6.1f} {r['traced_mb']:>9.1f} "
                    f"{work[name][1]:>7.1f} {r['peak_rss_mb']:>6.0f} {r['rss_mb']:>7.1f} {r['seconds']:>5.1f}"
                )
            traced, net = (work["large"][i] / work["small"][i] for i in (0, 1))
            print(f"{mode:>5} large/small (4x slide area): work {net:.2f}x, traced {traced:.2f}x")
        print("(wanted: tiles work ~1x; the whole-slide read grows ~4x)")


if __name__ == "__main__":
    main()
