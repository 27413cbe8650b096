"""``benchmarks/gpu_check.sh --shrink`` runs the GPU check's whole path on a CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
METHODS = (
    "gradcam",
    "gradcampp",
    "hirescam",
    "layercam",
    "gradient",
    "smoothgrad",
    "integrated_gradients",
    "occlusion",
)


@pytest.mark.slow
def test_gpu_check_runs_shrunk_on_cpu_and_prints_every_figure(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [str(ROOT / "benchmarks/gpu_check.sh"), "--shrink", "--workdir", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "phantom: 18 patches of 64 px" in out and "images/s" in out
    rows = {
        line.split()[0]: line.split()
        for line in out.splitlines()
        if line.split()[:1] and line.split()[0] in METHODS
    }
    assert set(rows) == set(METHODS)
    for row in rows.values():
        maps_per_s, floor_fraction = float(row[1]), float(row[3])
        assert maps_per_s > 0 and 0 < floor_fraction < 10, row
    assert (tmp_path / "saliency" / "smoothgrad" / "manifest.json").is_file()
