"""Point a registered model's ``champion`` alias at a version.

Run::

    histoxai promote --model histoxai-mdfa --version 3
    histoxai promote --model histoxai-cc --version 2 --alias staging

Uses ``$MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<repo>/mlflow.db``.
"""

from __future__ import annotations

import argparse

from histoxai.config import Config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="registered model name, e.g. histoxai-mdfa")
    parser.add_argument("--version", required=True, help="model version to promote")
    parser.add_argument("--alias", default="champion", help="alias to set (default: champion)")


def run(cfg: Config, args: argparse.Namespace) -> dict:
    """Set the alias and print what changed."""
    from histoxai.tracking import resolve_tracking_uri

    tracking_uri = resolve_tracking_uri(must_exist=True)  # before the registry's heavy imports
    from histoxai.tracking import promote

    done = promote(args.model, args.version, tracking_uri, args.alias)
    was = f" (was version {done['previous']})" if done["previous"] else ""
    print(f"{done['name']}@{done['alias']} -> version {done['version']}{was} in {tracking_uri}")
    return done
