"""Search spaces: the shipped files parse, mistakes name the file and key, sampling is conditional."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from histoxai.config import Config, ConfigError, apply_overrides
from tuning.space import SpaceError, load_space, objective_weights, sample

REPO = Path(__file__).resolve().parents[2]
SPACES = sorted((REPO / "tuning" / "spaces").glob("*.yaml"))


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_shipped_spaces_parse_and_sample_valid_configs(path):
    space = load_space(path)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        cfg, params = sample(space, trial, Config())
        study.tell(trial, 0.0)
        assert set(params) <= {d.key for d in space.dimensions}
        if "train.lr" in params:
            assert cfg.train.lr == params["train.lr"]
        # the cosine schedule has its own LRs
        assert ("train.lr" in params) == (params["train.schedule"] == "none")
        assert ("train.warmup_epochs" in params) == (params["train.schedule"] == "cosine")
        assert ("train.weight_decay" in params) == (params["train.optimizer"] == "adamw")


def test_light_space_covers_its_dimensions():
    space = load_space(REPO / "tuning" / "spaces" / "light-mdfa.yaml")
    dims = {d.key: d for d in space.dimensions}
    assert set(dims["model.backbone"].spec["choices"]) >= {
        "mobilenetv3_small_100",
        "convnext_atto",
        "densenet121",
        "efficientnetv2_rw_t",
    }
    assert (dims["train.lr"].spec["low"], dims["train.lr"].spec["high"], dims["train.lr"].spec["log"]) == (
        1e-5,
        1e-4,
        True,
    )
    assert (
        min(dims["train.batch_size"].spec["choices"]) == 4
        and max(dims["train.batch_size"].spec["choices"]) == 32
    )
    assert dims["train.weight_decay"].spec["low"] == 1e-3 and dims["train.weight_decay"].spec["high"] == 1e-2
    for key in (
        "train.schedule",
        "train.warmup_epochs",
        "train.decay_epochs",
        "train.initial_lr",
        "train.warmup_target_lr",
        "train.optimizer",
        "model.dropout",
        "model.feature_width",
        "train.augment.flips",
        "train.epochs",
    ):
        assert key in dims
    assert space.weights == {"md": 0.5, "fa": 0.5}


SHIPPED_BACKBONES = sorted(
    {
        c
        for p in SPACES
        for d in load_space(p).dimensions
        if d.key == "model.backbone"
        for c in d.spec["choices"]
    }
)


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED_BACKBONES)
def test_every_backbone_of_a_shipped_space_fits_the_default_patch_size(name):
    from tuning.training import check_backbone_fits

    check_backbone_fits(name, Config().data.patch_size_px)  # raises BackboneDoesNotFit otherwise


def test_a_backbone_too_deep_for_the_patch_size_is_named_in_the_error():
    from tuning.training import BackboneDoesNotFit, check_backbone_fits

    with pytest.raises(BackboneDoesNotFit, match="convnext_atto does not fit 16 px"):
        check_backbone_fits("convnext_atto", 16)


BAD = {
    "unknown key": ("params: {train.lrr: {type: float, low: 1, high: 2}}", "train.lrr"),
    "unknown section key": ("params: {trian.lr: {type: float, low: 1, high: 2}}", "trian.lr"),
    "unknown type": ("params: {train.lr: {type: floaty, low: 1, high: 2}}", "floaty"),
    "low above high": ("params: {train.lr: {type: float, low: 3.0, high: 2.0}}", "low (3.0) > high (2.0)"),
    "wrong value type": (
        "params: {train.batch_size: {type: categorical, choices: [4, big]}}",
        "train.batch_size",
    ),
    "int bound is a float": ("params: {train.epochs: {type: int, low: 1.5, high: 3}}", "train.epochs"),
    "out of range": ("params: {train.batch_size: {type: int, low: 0, high: 4}}", ">= 1"),
    "not an allowed choice": ("params: {train.optimizer: {type: categorical, choices: [adam, sgd]}}", "sgd"),
    "log with zero low": ("params: {model.dropout: {type: float, low: 0.0, high: 0.5, log: true}}", "log"),
    "section instead of field": ("params: {train.augment: {type: categorical, choices: [1]}}", "section"),
    "condition on a later key": (
        "params: {train.warmup_epochs: {type: int, low: 0, high: 2, when: {train.schedule: cosine}},"
        " train.schedule: {type: categorical, choices: [none, cosine]}}",
        "train.schedule",
    ),
    "bad condition value": (
        "params: {train.warmup_epochs: {type: int, low: 0, high: 2, when: {train.schedule: cosin}}}",
        "cosin",
    ),
    "weight of a missing target": (
        "objective: {weights: {cc: 1.0}}\nparams: {train.lr: {type: float, low: 0.1, high: 0.2}}",
        "objective.weights.cc",
    ),
    "misspelled field": ("params: {train.lr: {type: float, low: 0.1, high: 0.2, lgo: true}}", "lgo"),
    "unknown top-level section": ("parms: {}", "parms"),
    "no params": ("fixed: {train.epochs: 2}", "params"),
    "bad fixed value": (
        "fixed: {train.epochs: many}\nparams: {train.lr: {type: float, low: 0.1, high: 0.2}}",
        "train.epochs",
    ),
    "enqueue outside the space": (
        "params: {train.lr: {type: float, low: 0.1, high: 0.2}}\nenqueue: [{train.lr: 0.5}]",
        "enqueue[0].train.lr",
    ),
}


@pytest.mark.parametrize("text, needle", BAD.values(), ids=BAD.keys())
def test_a_bad_space_is_rejected_naming_the_file_and_the_key(tmp_path, text, needle):
    path = tmp_path / "bad_space.yaml"
    path.write_text(text)
    with pytest.raises(SpaceError) as err:
        load_space(path)
    assert str(path) in str(err.value)
    assert needle in str(err.value)
    assert isinstance(err.value, ConfigError)  # the CLI prints it as a clean error


def test_conditions_may_use_fixed_config_values(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "fixed: {train.schedule: cosine}\n"
        "params:\n"
        "  train.warmup_epochs: {type: int, low: 1, high: 2, when: {train.schedule: cosine}}\n"
        "  train.weight_decay: {type: float, low: 0.001, high: 0.01, when: {train.optimizer: adam}}\n"
    )
    space = load_space(path)
    trial = optuna.create_study().ask()
    cfg, params = sample(space, trial, Config())
    assert cfg.train.schedule == "cosine" and "train.warmup_epochs" in params
    assert "train.weight_decay" not in params  # base optimizer is adamw


def test_yaml_style_exponent_bounds_are_read_as_numbers(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("params: {train.lr: {type: float, low: 1e-5, high: 1e-4, log: true}}")
    dim = load_space(path).dimensions[0]
    assert dim.spec["low"] == 1e-5 and dim.spec["high"] == 1e-4


def test_objective_weights_default_to_the_mean_over_targets(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("params: {train.lr: {type: float, low: 0.1, high: 0.2}}")
    assert objective_weights(load_space(path), ("md", "fa")) == {"md": 0.5, "fa": 0.5}


def test_apply_params_type_checks_like_the_params_file():
    cfg = apply_overrides(Config(), {"train.lr": 3e-5, "model.targets": ["cc"]})
    assert cfg.train.lr == 3e-5 and cfg.model.targets == ("cc",)
    with pytest.raises(ConfigError, match="train.batch_size"):
        apply_overrides(Config(), {"train.batch_size": "eight"})
