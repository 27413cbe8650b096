import math

import pytest

from histoxai.config import TrainConfig
from histoxai.training.schedules import cosine_with_warmup, lr_schedule


def test_published_cosine_schedule_warms_up_then_decays_to_zero():
    cfg = TrainConfig(
        schedule="cosine", warmup_epochs=17, decay_epochs=60, initial_lr=1e-5, warmup_target_lr=5e-5
    )
    lr = lr_schedule(cfg)
    assert lr(0) == pytest.approx(1e-5)
    assert lr(8.5) == pytest.approx(3e-5)  # linear warmup: halfway
    assert lr(17) == pytest.approx(5e-5)  # peak at the end of warmup
    assert lr(17 + 30) == pytest.approx(2.5e-5)  # cosine: half the peak halfway through decay
    assert lr(17 + 60) == pytest.approx(0, abs=1e-12)
    assert lr(100) == pytest.approx(0, abs=1e-12)  # stays at 0 after decay
    curve = [lr(e / 4) for e in range(4 * 17)]
    assert all(b > a for a, b in zip(curve, curve[1:]))  # strictly rising during warmup
    decay = [lr(17 + e / 4) for e in range(4 * 60 + 1)]
    assert all(b < a for a, b in zip(decay, decay[1:]))  # strictly falling during decay


def test_cosine_without_warmup_starts_at_initial_lr():
    assert cosine_with_warmup(0, 1e-3, 5e-3, 0, 10) == pytest.approx(1e-3)
    assert cosine_with_warmup(5, 1e-3, 5e-3, 0, 10) == pytest.approx(0.5e-3)
    assert cosine_with_warmup(3, 1e-3, 5e-3, 2, 0) == pytest.approx(5e-3)  # no decay: hold the peak


def test_no_schedule_is_constant_lr():
    lr = lr_schedule(TrainConfig(lr=3e-4, schedule="none"))
    assert {lr(e) for e in (0, 0.5, 10, 1000)} == {3e-4}
    assert not math.isnan(lr(0))
