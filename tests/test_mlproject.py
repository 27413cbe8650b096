"""MLproject: every pipeline stage is an entry point whose command the CLI accepts."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from histoxai import cli

REPO = Path(__file__).resolve().parents[1]
ENTRY_POINTS = yaml.safe_load((REPO / "MLproject").read_text())["entry_points"]


def test_every_pipeline_stage_is_an_entry_point():
    stages = {
        s.get("do", s)["cmd"].split()[1]
        for s in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].values()
    }
    assert stages | {"tune"} <= set(ENTRY_POINTS)


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_entry_point_commands_parse(name):
    entry = ENTRY_POINTS[name]
    # MLflow substitutes each parameter shell-quoted (an empty string becomes '')
    values = {k: shlex.quote(str(v.get("default", ""))) for k, v in entry.get("parameters", {}).items()}
    for part in entry["command"].format(**values).split("&&"):
        argv = shlex.split(part)
        assert argv[0] == "histoxai"
        args = cli.build_parser(argv[1]).parse_args(argv[1:])
        assert args.command == argv[1] and args.params == "params.yaml"
