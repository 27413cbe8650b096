"""Measure the saliency maps of one explained model and say which to trust.

Run::

    histoxai xai-eval                                             # maps of explain.model_uri
    histoxai xai-eval --saliency-dir data/saliency/histoxai-cc
    histoxai xai-eval --checkpoint models/histoxai-mdfa/model.pt --set xai_eval.max_patches=64

Reads ``data/patches``, the saliency directory (``histoxai explain``) and the model that
made the maps (the exact registry version in the saliency manifest, or
``--checkpoint``), and pools the maps of further training seeds (``seeds/<seed>/``,
each with ``seeds/<seed>/model.pt`` beside the checkpoint); writes into ``reports/xai_eval/<saliency dir name>/``
(``metrics/<target>.json``, ``ranking.json``, ``report.md``, ``tables/*.csv``, ``plots/*.png``)
as one unit and logs them to the model's MLflow run. A second run on the same report
directory is refused; a killed run's leftovers are finished or removed by the next one. The library side is ``histoxai.xai_eval``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from histoxai.config import Config
from histoxai.io import finish_interrupted, output_lock


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--saliency-dir", default=None,
        help="saliency maps to evaluate (default: xai_eval.saliency_dir, else explain's output directory)",
    )  # fmt: skip
    parser.add_argument(
        "--checkpoint", default=None,
        help="model.pt of the explained model (default: the registry version named in the saliency manifest)",
    )  # fmt: skip


def run(cfg: Config, args: argparse.Namespace | None = None) -> Path:
    """Evaluate the maps in the saliency directory and write the report."""
    from histoxai.xai_eval import inputs
    from histoxai.xai_eval.pipeline import evaluate_saliency
    from histoxai.xai_eval.report import flat_metrics, write_report

    sal_dir = inputs.saliency_dir(cfg, getattr(args, "saliency_dir", None))
    out_dir = inputs.output_dir(cfg, sal_dir)
    with output_lock(out_dir):  # a second writer fails at once
        if finish_interrupted(out_dir):
            print(f"xai-eval: finished or removed what a killed run left in {out_dir}")
        results, info = evaluate_saliency(cfg, sal_dir, getattr(args, "checkpoint", None))
        files = write_report(out_dir, results, info)
    logged = inputs.log_results(info, out_dir, flat_metrics(results), files)
    print(f"xai-eval: {out_dir}{' (logged to run ' + logged + ')' if logged else ''}")
    for target, res in results.items():
        print(f"  {target}: {res.verdict.get('text')}")
    return out_dir
