import pytest
import yaml

from histoxai.config import Config, ConfigError, dump_yaml, flatten, load_config, parse


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
