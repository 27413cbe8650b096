"""``histoxai <command>``: one command per pipeline step.

Every command reads ``params.yaml`` (or ``--params FILE``) and takes typed overrides::

    histoxai prepare --set data.patch_size_px=32
    histoxai train --params params-gpu.yaml

A command is a module in ``histoxai.stages`` (or ``tuning`` / ``dashboard``) with
``add_arguments(parser)`` (optional) and ``run(cfg, args)``; adding one is one entry in
``COMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from histoxai.config import ConfigError, load_config

COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("histoxai.stages.prepare", "build the patch store (phantom or MICROMEN)"),
    "train": ("histoxai.stages.train", "train a regressor, track it in MLflow and register it"),
    "promote": ("histoxai.stages.promote", "set a registered model version's champion alias"),
    "evaluate": ("histoxai.stages.evaluate", "regression report of a trained model beside the baseline"),
    "dashboard": ("histoxai.stages.dashboard", "serve the Dash dashboard for the patch and saliency stores"),
    "tune": ("histoxai.stages.tune", "Optuna hyperparameter study (MLflow parent run, nested trial runs)"),
    "explain": (
        "histoxai.stages.explain",
        "saliency maps of a registered model for every head and method variant",
    ),
    "xai-eval": ("histoxai.stages.xai_eval", "measure and rank the saliency methods of an explained model"),
    "baseline": ("histoxai.stages.baseline", "the MICROMEN per-voxel baseline on summary.mat, as published"),
    "figures": ("histoxai.stages.figures", "the thesis' figure grids and Table 4.1 (per-sample R², in/out)"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="histoxai", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
        p.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a param, e.g. --set train.lr=3e-5 (repeatable)",
        )
        mod = importlib.import_module(module) if _has_arguments(module) else None
        if mod is not None:
            mod.add_arguments(p)
    args = parser.parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        cfg = load_config(args.params, args.overrides)
        module.run(cfg, args)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"histoxai {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


def _has_arguments(module: str) -> bool:
    # Only commands that declare extra flags are imported while building the parser,
    # so `histoxai --help` stays fast.
    return module in _WITH_ARGUMENTS


_WITH_ARGUMENTS: set[str] = {
    "histoxai.stages.evaluate",
    "histoxai.stages.dashboard",
    "histoxai.stages.tune",
    "histoxai.stages.xai_eval",
    "histoxai.stages.train",
    "histoxai.stages.promote",
    "histoxai.stages.baseline",
    "histoxai.stages.figures",
}


if __name__ == "__main__":
    sys.exit(main())
