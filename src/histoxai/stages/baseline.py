"""The MICROMEN per-voxel baseline on ``summary.mat`` (``histoxai.evaluation.voxel_baseline``).

Run::

    histoxai baseline                                   # figures.summary_mat (../shared/data/micromen/summary.mat)
    histoxai baseline --summary /data/summary.mat --out reports/baseline

Writes ``<out>/report.md`` (reproduced beside published numbers), ``per_tumour.csv`` and
``summary.json``; ``<out>`` defaults to ``base.reports_dir``/baseline.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from histoxai.config import Config, positive_int
from histoxai.evaluation.voxel_baseline import per_voxel_baseline, write_voxel_baseline


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--summary", default="", help="summary.mat (default: figures.summary_mat)")
    parser.add_argument("--out", default="", help="output folder (default: <reports_dir>/baseline)")
    parser.add_argument(
        "--repeats", type=positive_int, default=10, help="random 80/20 splits per tumour (10)"
    )


def run(cfg: Config, args: argparse.Namespace) -> Path:
    summary = args.summary or cfg.figures.summary_mat
    out = Path(args.out or Path(cfg.base.reports_dir) / "baseline")
    settings = {
        "summary": str(summary),
        "sigma_vox": cfg.figures.baseline_sigma_vox,
        "repeats": args.repeats,
        "seed": cfg.base.seed,
    }
    result = per_voxel_baseline(summary, cfg.figures.baseline_sigma_vox, args.repeats, seed=cfg.base.seed)
    write_voxel_baseline(result, out, settings)
    s = result.summary
    print(
        f"per-voxel baseline: across tumours R² MD {s['across_r2_md']:.3f}, in-plane FA "
        f"{s['across_r2_faip']:.3f}; per tumour median R² MD {s['per_tumour_median_r2_md']:.3f}, "
        f"in-plane FA {s['per_tumour_median_r2_faip']:.3f} -> {out / 'report.md'}"
    )
    return out
