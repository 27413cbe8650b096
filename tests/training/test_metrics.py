import numpy as np
import pytest
import torch

from histoxai.training.metrics import TargetMetrics, regression_metrics


def test_metrics_are_named_split_metric_target_and_match_their_formulas():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(50, 2)).astype(np.float32)
    yhat = (y + rng.normal(scale=0.3, size=y.shape)).astype(np.float32)
    m = TargetMetrics(["md", "fa"])
    m.update(torch.from_numpy(yhat[:20]), torch.from_numpy(y[:20]))  # accumulates over batches
    m.update(torch.from_numpy(yhat[20:]), torch.from_numpy(y[20:]))
    out = m.compute("val")
    assert set(out) == {f"val/{k}_{t}" for k in ("r2", "ev", "mse", "mae") for t in ("md", "fa")}
    for j, t in enumerate(["md", "fa"]):
        err = yhat[:, j] - y[:, j]
        r2 = 1 - (err**2).sum() / ((y[:, j] - y[:, j].mean()) ** 2).sum()
        assert out[f"val/r2_{t}"] == pytest.approx(r2, rel=1e-4)
        assert out[f"val/ev_{t}"] == pytest.approx(1 - err.var() / y[:, j].var(), rel=1e-4)  # Eq. 3.2
        assert out[f"val/mse_{t}"] == pytest.approx((err**2).mean(), rel=1e-4)
        assert out[f"val/mae_{t}"] == pytest.approx(np.abs(err).mean(), rel=1e-4)


def test_missing_targets_are_left_out():
    y = np.array([[1.0, np.nan], [2.0, np.nan], [3.0, 5.0]], np.float32)
    yhat = np.array([[1.0, 9.0], [2.0, 9.0], [3.0, 5.0]], np.float32)
    out = regression_metrics(yhat, y, ["md", "cc"], "test")
    assert out["test/r2_md"] == pytest.approx(1.0)
    assert np.isnan(out["test/r2_cc"])  # one value: no R2
    assert regression_metrics(yhat[:0], y[:0], ["md"], "out")["out/mse_md"] != 0  # NaN, not a fake 0


def test_states_of_disjoint_batches_add_up_to_the_state_of_their_union():
    rng = np.random.default_rng(1)
    y = rng.normal(size=(40, 2)).astype(np.float32)
    y[3, 1] = y[17, 0] = np.nan
    yhat = (y + rng.normal(scale=0.5, size=y.shape)).astype(np.float32)
    whole, parts = TargetMetrics(["md", "fa"]), [TargetMetrics(["md", "fa"]) for _ in range(2)]
    whole.update(torch.from_numpy(yhat), torch.from_numpy(y))
    parts[0].update(torch.from_numpy(yhat[::2]), torch.from_numpy(y[::2]))  # two ranks' shares
    parts[1].update(torch.from_numpy(yhat[1::2]), torch.from_numpy(y[1::2]))
    merged = TargetMetrics(["md", "fa"])  # a rank that saw nothing, given the sum
    merged.load_state(parts[0].state() + parts[1].state())
    assert merged.counts == whole.counts == {"md": 39, "fa": 39}
    want, got = whole.compute("val"), merged.compute("val")
    assert want.keys() == got.keys()
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-5), k
    with pytest.raises(ValueError, match="metric state"):
        merged.load_state(torch.zeros(3, dtype=torch.float64))
