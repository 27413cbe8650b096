from pathlib import Path

import pytest
import yaml

from histoxai.config import Config, ConfigError, dump_yaml, flatten, load_config, parse

REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def test_repo_params_file_is_valid(repo_root):
    cfg = load_config(repo_root / "params.yaml")
    assert cfg.data.source == "phantom"


@pytest.mark.parametrize("params_file", ["params.yaml", "params-gpu.yaml"])
def test_shipped_params_files_parse(repo_root, params_file):
    assert isinstance(load_config(repo_root / params_file), Config)


def test_overrides_are_typed(tmp_path):
    cfg = load_config(None, ["data.patch_size_px=32", "train.lr=3e-5", "model.targets=[cc]"])
    assert cfg.data.patch_size_px == 32 and cfg.train.lr == 3e-5 and cfg.model.targets == ("cc",)


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.patch_size_px=big", "data.patch_size_px='big': expected an integer"),
        ("data.patch_size_px=4", "data.patch_size_px=4: expected a value >= 8"),
        ("data.pach_size_px=64", "unknown key 'data.pach_size_px'"),
        ("data.source=tcga", "data.source='tcga': expected one of"),
        ("train.lr=0", "train.lr=0.0: expected a value > 0"),
        ("data.split.fractions=[0.5, 0.5]", "expected a list of 3 values"),
        ("model.dropout=true", "expected a number"),
        ("train", "expected KEY=VALUE"),
    ],
)
def test_bad_values_name_the_dotted_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_config(None, [override])


def test_unknown_section_and_file_are_named(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("trian:\n  lr: 1\n")
    with pytest.raises(ConfigError, match=rf"unknown key 'trian'.*\(in {bad}\)"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_config_is_frozen():
    cfg = load_config(None)
    with pytest.raises(AttributeError):
        cfg.train.lr = 1.0  # type: ignore[misc]


def test_yaml_dump_round_trips_and_flattens_to_dotted_names():
    cfg = load_config(None, ["train.lr=0.01"])
    assert parse(Config, yaml.safe_load(dump_yaml(cfg))) == cfg
    flat = flatten(cfg)
    assert flat["train.lr"] == 0.01 and flat["data.split.scheme"] == "random"


BAD_AT_LOAD = [
    # non-finite numbers, in every kind of float field
    ("train.lr=.nan", "train.lr=nan: expected a finite number"),
    ("train.lr=.inf", "train.lr=inf: expected a finite number"),
    ("train.lr=inf", "train.lr=inf: expected a finite number"),
    ("model.dropout=.nan", "model.dropout=nan: expected a finite number"),
    ("train.weight_decay=-.inf", "train.weight_decay=-inf: expected a finite number"),
    ("data.phantom.um_per_px=.nan", "data.phantom.um_per_px=nan: expected a finite number"),
    ("model.loss_weights={md: .nan}", "model.loss_weights.md=nan: expected a finite number"),
    ("data.split.fractions=[.nan, 0.5, 0.5]", r"data.split.fractions\[0\]=nan: expected a finite number"),
    ("xai_eval.blur_sigma_px=.inf", "xai_eval.blur_sigma_px=inf: expected a finite number"),
    (
        "explain.methods=[{name: sg, method: smoothgrad, params: {sigma: .nan}}]",
        "explain.methods.*sigma=nan: expected a finite number",
    ),
    # split fractions: each in [0, 1], summing to 1
    ("data.split.fractions=[1.2, -0.1, -0.1]", "expected each fraction in \\[0, 1\\]"),
    ("data.split.fractions=[0.5, 0.5, 0.5]", "summing to 1"),
    ("data.split.fractions=[0.2, 0.2, 0.2]", "summing to 1"),
    # explain method parameters
    (
        "explain.methods=[{name: sg, method: smoothgrad, params: {sigma: -0.2}}]",
        "params.sigma=-0.2: expected a value > 0",
    ),
    (
        "explain.methods=[{name: sg, method: smoothgrad, params: {sigma: 0}}]",
        "params.sigma=0: expected a value > 0",
    ),
    (
        "explain.methods=[{name: smoothgrad, params: {n: 0}}]",
        r"explain.methods\[0\].params.n=0: expected a value >= 1",
    ),
    (
        "explain.methods=[gradcam, {name: o, method: occlusion, params: {window: 0}}]",
        r"methods\[1\].params.window=0",
    ),
    (
        "explain.methods=[{name: o, method: occlusion, params: {stride: 0}}]",
        "params.stride=0: expected a value >= 1",
    ),
    (
        "explain.methods=[{name: integrated_gradients, params: {steps: 0}}]",
        "params.steps=0: expected a value >= 1",
    ),
    # ports and storage URLs
    ("dashboard.port=70000", "dashboard.port=70000: expected a value >= 1 and <= 65535"),
    ("dashboard.port=0", "dashboard.port=0: expected a value >= 1"),
    (
        "tune.storage=mysql://u:pw@db/optuna",
        "tune.storage='mysql://\\*\\*\\*@db/optuna': the 'mysql' database driver",
    ),
    ("tune.storage=nosuchdb://x/y", "tune.storage='nosuchdb://x/y': not a database URL"),
    ("tune.storage=postgresql://u:pw@db/optuna", "use postgresql\\+psycopg2://"),
]


@pytest.mark.parametrize("override, message", BAD_AT_LOAD, ids=[o for o, _ in BAD_AT_LOAD])
def test_bad_values_are_rejected_at_load(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


@pytest.mark.parametrize(
    "override",
    [
        "tune.storage=sqlite:///optuna.db",
        "tune.storage=postgresql+psycopg2://u:pw@db/optuna",
        "tune.storage=optuna/s.journal",
        "data.split.fractions=[1, 0, 0]",
        "explain.methods=[{name: sg, method: smoothgrad, params: {sigma: 0.1, n: 1}}]",
    ],
)
def test_good_edge_values_load(override):
    load_config(None, [override])


def test_port_flag_is_range_checked():
    import argparse

    from histoxai.config import port_number

    assert port_number("8050") == 8050
    for bad in ("70000", "0", "http"):
        with pytest.raises(argparse.ArgumentTypeError, match="1..65535"):
            port_number(bad)


def test_cli_names_the_key_of_a_nan_before_any_work(tmp_path, monkeypatch, capsys):
    from histoxai.cli import main

    monkeypatch.chdir(tmp_path)  # no params.yaml, no store: the config error must come first
    assert main(["train", "--params", str(REPO_PARAMS), "--set", "train.lr=.nan"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.lr=nan: expected a finite number" in err[0]
    assert not any(tmp_path.iterdir())  # nothing written
