"""The thesis' figures and tables (``histoxai.evaluation.figures``).

Run::

    histoxai figures                                    # the mdfa model and its saliency store
    histoxai figures --model-dir models/histoxai-cc --saliency-dir data/saliency/histoxai-cc
    histoxai figures --per-sample                       # also Brabec's one-model-per-sample protocol

Writes ``<out>/grid_<target>.{png,pdf}`` (``figures.n_patches`` random ``figures.split``
patches × method, ``figures.alpha``, ``figures.cmap``), ``table_4_1.{md,csv}`` (per-sample
R², in/out, both definitions, beside the published per-tumour CNNs when
``figures.summary_mat`` exists) and with ``--per-sample`` ``per_sample.{md,csv}``.
``<out>`` defaults to ``figures.output_dir`` or ``base.reports_dir``/figures/<model name>.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from histoxai.config import Config
from histoxai.errors import MissingInputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-dir", default="", help="trained model folder (default: models/<registered name>)"
    )
    parser.add_argument(
        "--saliency-dir", default="", help="saliency store (default: figures.saliency_dir, ...)"
    )
    parser.add_argument("--out", default="", help="output folder")
    parser.add_argument("--per-sample", action="store_true", help="also train one model per sample (Brabec)")


def run(cfg: Config, args: argparse.Namespace) -> list[Path]:
    from histoxai.evaluation.figures import write_thesis_outputs
    from histoxai.evaluation.voxel_baseline import load_summary

    name = cfg.model.registered_name
    model_dir = Path(args.model_dir or Path(cfg.base.models_dir) / name)
    saliency = Path(
        args.saliency_dir
        or cfg.figures.saliency_dir
        or cfg.explain.output_dir
        or Path(cfg.base.saliency_dir) / name
    )
    out = Path(args.out or cfg.figures.output_dir or Path(cfg.base.reports_dir) / "figures" / model_dir.name)
    if not (model_dir / "predictions.parquet").is_file() and not (saliency / "manifest.json").is_file():
        raise MissingInputError(f"neither {model_dir}/predictions.parquet nor a saliency store at {saliency}")
    summary_path = Path(cfg.figures.summary_mat)
    written = write_thesis_outputs(
        cfg,
        out,
        model_dir if (model_dir / "predictions.parquet").is_file() else None,
        saliency if (saliency / "manifest.json").is_file() else None,
        load_summary(summary_path) if summary_path.is_file() and cfg.data.source == "micromen" else None,
        per_sample=args.per_sample,
    )
    print(f"figures: wrote {len(written)} files to {out}")
    return written
