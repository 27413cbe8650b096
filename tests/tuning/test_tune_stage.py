"""``histoxai tune``: flags reach the study; a bad space is a clean error."""

from __future__ import annotations

import pytest

from histoxai.cli import main


def test_bad_space_file_is_rejected_by_the_command_naming_file_and_key(tmp_path, capsys):
    space = tmp_path / "typo.yaml"
    space.write_text("params:\n  train.lr: {type: float, low: 1.0e-3, hihg: 1.0e-2}\n")
    params = tmp_path / "params.yaml"
    params.write_text("{}\n")
    assert main(["tune", "--params", str(params), "--space", str(space), "--n-trials", "2"]) == 2
    err = capsys.readouterr().err
    assert "histoxai tune: error:" in err and str(space) in err and "params.train.lr" in err and "hihg" in err


@pytest.mark.parametrize(
    "flag, value, key", [("--sampler", "grid", "tune.sampler"), ("--n-trials", "0", "tune.n_trials")]
)
def test_bad_flags_are_config_errors(tmp_path, capsys, flag, value, key):
    params = tmp_path / "params.yaml"
    params.write_text("{}\n")
    assert main(["tune", "--params", str(params), flag, value]) == 2
    assert key in capsys.readouterr().err
