"""``histoxai``: lazy dispatch, flags of every command reachable, only user errors are one line."""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import types

import pytest

from histoxai import cli
from histoxai.errors import InputError, MissingInputError, UserError

HEAVY = ("torch", "matplotlib", "scipy", "skimage", "mlflow", "optuna", "dash", "pandas")


def _imported_after(code: str) -> list[str]:
    probe = (
        "import sys, json\n"
        f"{code}\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_top_level_help_imports_no_heavy_library():
    code = "from histoxai import cli\ntry:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass"
    assert _imported_after(code) == []


def test_a_command_imports_only_its_own_module():
    # `prepare --help` registers prepare's flags only: no other stage module is imported
    code = (
        "from histoxai import cli\ntry:\n    cli.main(['prepare', '--help'])\nexcept SystemExit:\n    pass\n"
        "assert not [m for m in sys.modules if m.startswith('histoxai.stages.') and m != 'histoxai.stages.prepare']"
    )
    _imported_after(code)


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_flag_of_every_command_is_reachable(command, capsys):
    module = importlib.import_module(cli.COMMANDS[command][0])
    own = argparse.ArgumentParser()
    getattr(module, "add_arguments", lambda p: None)(own)
    flags = [s for a in own._actions for s in a.option_strings if s.startswith("--")]
    with pytest.raises(SystemExit) as done:
        cli.main([command, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for flag in [*flags, "--params", "--set", "--overrides"]:
        assert flag in text, f"{command}: {flag} missing from --help"


def _fake_command(monkeypatch, run):
    module = types.ModuleType("histoxai_fake_stage")
    module.run = run
    monkeypatch.setitem(sys.modules, "histoxai_fake_stage", module)
    monkeypatch.setitem(cli.COMMANDS, "fake", ("histoxai_fake_stage", "a test command"))


def test_set_and_overrides_reach_every_command(monkeypatch, tmp_path):
    seen = {}
    _fake_command(monkeypatch, lambda cfg, args: seen.update(lr=cfg.train.lr, seed=cfg.base.seed))
    (tmp_path / "p.yaml").write_text("{}\n")
    args = [
        "fake",
        "--params",
        str(tmp_path / "p.yaml"),
        "--set",
        "train.lr=0.5",
        "--overrides",
        "base.seed=7",
    ]
    assert cli.main(args) == 0
    assert seen == {"lr": 0.5, "seed": 7}


@pytest.mark.parametrize("error", [UserError("bad"), InputError("bad"), MissingInputError("bad")])
def test_user_errors_are_one_line(monkeypatch, tmp_path, capsys, error):
    def run(cfg, args):
        raise error

    _fake_command(monkeypatch, run)
    (tmp_path / "p.yaml").write_text("{}\n")
    assert cli.main(["fake", "--params", str(tmp_path / "p.yaml")]) == 2
    assert capsys.readouterr().err == "histoxai fake: error: bad\n"


@pytest.mark.parametrize("error", [ValueError("numpy bug"), FileNotFoundError("internal"), KeyError("x")])
def test_other_exceptions_keep_their_traceback(monkeypatch, tmp_path, error):
    def run(cfg, args):
        raise error

    _fake_command(monkeypatch, run)
    (tmp_path / "p.yaml").write_text("{}\n")
    with pytest.raises(type(error)):
        cli.main(["fake", "--params", str(tmp_path / "p.yaml")])


def test_config_typo_is_one_line_naming_the_key(tmp_path, capsys):
    (tmp_path / "p.yaml").write_text("{}\n")
    assert cli.main(["prepare", "--params", str(tmp_path / "p.yaml"), "--set", "data.pach_size_px=3"]) == 2
    assert "unknown key 'data.pach_size_px'" in capsys.readouterr().err
