"""``histoxai <command>``: one command per pipeline step.

Every command reads ``params.yaml`` (or ``--params FILE``) and takes typed overrides::

    histoxai prepare --set data.patch_size_px=32
    histoxai train --params params-gpu.yaml
    histoxai train --overrides 'train.lr=3e-4 model.targets=[cc]'   # one string (MLproject)

A command is a module with ``run(cfg, args)`` and, if it has flags of its own,
``add_arguments(parser)``; adding one is one entry in ``COMMANDS``. Only the chosen
command's module is imported, so ``histoxai --help`` loads no torch, mlflow or plotting.
A :class:`~histoxai.errors.UserError` (bad config, missing input, unknown model, dead
tracking server) is printed as one line and exits 2; any other exception is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
from collections.abc import Sequence

from histoxai.config import load_config
from histoxai.errors import UserError

COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("histoxai.stages.prepare", "build the patch store (phantom or MICROMEN)"),
    "train": ("histoxai.stages.train", "train a regressor, track it in MLflow and register it"),
    "promote": ("histoxai.stages.promote", "set a registered model version's champion alias"),
    "evaluate": ("histoxai.stages.evaluate", "regression report of a trained model beside the baseline"),
    "explain": ("histoxai.stages.explain", "saliency maps of a registered model for every head and method"),
    "xai-eval": ("histoxai.stages.xai_eval", "measure and rank the saliency methods of an explained model"),
    "tune": ("histoxai.stages.tune", "Optuna hyperparameter study (MLflow parent run, nested trial runs)"),
    "dashboard": ("histoxai.stages.dashboard", "serve the Dash dashboard for the patch and saliency stores"),
    "baseline": ("histoxai.stages.baseline", "the MICROMEN per-voxel baseline on summary.mat, as published"),
    "figures": ("histoxai.stages.figures", "the thesis' figure grids and Table 4.1 (per-sample R², in/out)"),
}


def build_parser(command: str | None) -> argparse.ArgumentParser:
    """The parser with every command listed; only ``command``'s module is imported
    (to register its flags)."""
    parser = argparse.ArgumentParser(prog="histoxai", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_common_arguments(p)
        if name == command:
            add_arguments = getattr(importlib.import_module(module), "add_arguments", None)
            if add_arguments is not None:
                add_arguments(p)
    return parser


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """``--params``, ``--set`` and ``--overrides``: shared by every command."""
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a param, e.g. --set train.lr=3e-5 (repeatable)",
    )
    parser.add_argument(
        "--overrides",
        dest="overrides_text",
        default="",
        metavar="'KEY=VALUE ...'",
        help="more overrides in one space-separated string (for MLproject: -P set='model.targets=[cc]')",
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command if command in COMMANDS else None).parse_args(argv)
    try:
        args.overrides = [*args.overrides, *shlex.split(args.overrides_text or "")]
        cfg = load_config(args.params, args.overrides)
        importlib.import_module(COMMANDS[args.command][0]).run(cfg, args)
    except UserError as err:
        print(f"histoxai {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
