"""A damaged ``model.pt`` is an error naming the file."""

from __future__ import annotations

import pytest
import torch

from histoxai.config import ModelConfig
from histoxai.models import build_regressor, load_checkpoint, save_checkpoint

TINY = ModelConfig(backbone="test_resnet", targets=("md",), hidden_width=8, feature_width=4)


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),  # truncated
        lambda p: p.write_bytes(b"\x00garbage" * 50),
        lambda p: torch.save({"format": "other"}, p),
    ],
    ids=["truncated", "garbage", "foreign"],
)
def test_damaged_checkpoint_names_the_file(tmp_path, damage):
    path = save_checkpoint(tmp_path / "model.pt", build_regressor(TINY, [0.0], [1.0]), TINY)
    damage(path)
    with pytest.raises(ValueError, match=str(path)):
        load_checkpoint(path)


def test_a_seed_checkpoint_must_hold_that_seeds_model(tmp_path):
    path = save_checkpoint(tmp_path / "model.pt", build_regressor(TINY, [0.0], [1.0]), TINY, {"seed": 3})
    assert load_checkpoint(path, seed=3).checkpoint_extra["seed"] == 3
    with pytest.raises(ValueError, match=f"{path} holds the model of training seed 3, not 5"):
        load_checkpoint(path, seed=5)
    plain = save_checkpoint(tmp_path / "plain.pt", build_regressor(TINY, [0.0], [1.0]), TINY)
    load_checkpoint(plain, seed=5)  # records no seed: accepted
