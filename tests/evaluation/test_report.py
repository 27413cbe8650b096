import json

import numpy as np
import pandas as pd
import pytest

from histoxai.evaluation import report
from histoxai.evaluation.metrics import regression_metrics
from histoxai.evaluation.report import evaluate, markdown_table, write_report
from tests.evaluation.helpers import predictions_from_store


@pytest.fixture(scope="module")
def frames(phantom_store):
    pred = predictions_from_store(phantom_store, noise=0.3, seed=0)
    base = predictions_from_store(phantom_store, noise=0.8, seed=1)
    return pred, base


def test_evaluate_names_metrics_split_metric_target(frames):
    pred, base = frames
    ev = evaluate(pred, ["md", "fa"], base, {"ceiling": {"md": 0.93, "fa": 0.9, "cc": 1.0}})
    test = pred[pred["split"] == "test"]
    assert ev.metrics["test/r2_md"] == pytest.approx(regression_metrics(test["y_md"], test["yhat_md"])["r2"])
    assert ev.metrics["baseline/test/r2_md"] < ev.metrics["test/r2_md"]
    assert ev.metrics["ceiling/r2_md"] == 0.93 and "ceiling/r2_cc" not in ev.metrics
    assert {"out/r2_fa", "sample/s3/out/r2_fa", "sample/s1/in/r2_md", "baseline/sample/s1/in/r2_md"} <= set(
        ev.metrics
    )
    assert all(np.isfinite(v) for v in ev.metrics.values())


def test_markdown_table_formats_numbers_and_missing_values():
    table = pd.DataFrame(
        {"R² md": [0.91234, np.nan], "n": [12, 3]}, index=pd.Index(["s1", "s2"], name="sample")
    )
    text = markdown_table(table)
    lines = text.splitlines()
    assert lines[0] == "| sample | R² md | n |"
    assert lines[2] == "| s1 | 0.912 | 12 |"
    assert lines[3] == "| s2 | – | 3 |"


def test_write_report_writes_everything_inside_the_directory_it_keeps(frames, tmp_path):
    pred, base = frames
    ev = evaluate(pred, ["md", "fa"], base, {"ceiling": {"md": 0.93}})
    out = tmp_path / "evaluate" / "m"
    out.mkdir(parents=True)
    (out / ".gitignore").write_text("/report.md\n")  # DVC's, beside its outputs: kept
    (out / "plots").mkdir()
    (out / "plots" / "maps_gone.png").write_bytes(b"old")  # the plots folder is replaced whole
    write_report(out, ev, pred, base, {"model": "m"}, ["a note"])
    assert (out / ".gitignore").read_text() == "/report.md\n"
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp") or ".old-" in p.name]
    headline = {t: json.loads((out / "metrics" / f"{t}.json").read_text()) for t in ("md", "fa")}
    assert headline == {t: {"r2": pytest.approx(ev.metrics[f"test/r2_{t}"], abs=5e-4)} for t in ("md", "fa")}
    assert json.loads((out / "all_metrics.json").read_text()) == pytest.approx(ev.metrics)
    text = (out / "report.md").read_text()
    assert "# Evaluation: m" in text and "a note" in text and "![maps_s3](plots/maps_s3.png)" in text
    assert {p.name for p in (out / "plots").iterdir()} == {
        "scatter_md.png", "scatter_fa.png", "maps_s1.png", "maps_s2.png", "maps_s3.png",
    }  # fmt: skip
    per_sample = pd.read_csv(out / "per_sample.csv", index_col=[0, 1])
    models = ("CNN", "baseline", "sample-mean")
    assert set(per_sample.index) == {(m, s) for m in models for s in ("s1", "s2", "s3")}
    assert len(pd.read_parquet(out / "baseline_predictions.parquet")) == len(pred)
    write_report(out, evaluate(pred, ["md", "fa"]), pred, None, {"model": "m"})  # baseline turned off
    assert not (out / "baseline_predictions.parquet").exists()  # a stale report file goes


def test_a_failed_report_leaves_the_previous_one_untouched(frames, tmp_path, monkeypatch):
    pred, _ = frames
    pred = pred[pred["sample"] == "s1"]
    ev = evaluate(pred, ["md"])
    out = tmp_path / "m"
    write_report(out, ev, pred, info={"model": "m"})
    before = (out / "all_metrics.json").read_text()

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report, "plot_sample_maps", broken)
    with pytest.raises(RuntimeError):
        write_report(out, evaluate(pred.assign(yhat_md=0.0), ["md"]), pred, info={"model": "m"})
    assert (out / "all_metrics.json").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary left behind


def test_sample_mean_shortcut_is_beside_every_r2_and_within_sample_r2_sees_through_it(frames):
    pred, _ = frames
    ev = evaluate(pred, ["md"])
    m = ev.metrics
    assert m["samplemean/test/r2within_md"] == pytest.approx(0.0, abs=0.05)  # test mean != train mean
    assert {"samplemean/test/r2_md", "samplemean/out/r2_md", "samplemean/sample/s1/in/r2_md"} <= set(m)
    table = report.comparison_table(ev)
    assert {"CNN r2", "CNN ev", "CNN r2within", "sample-mean r2"} <= set(table.columns)
    assert table.at["MD (µm²/ms), test", "sample-mean r2"] == pytest.approx(m["samplemean/test/r2_md"])


def test_sample_mean_baseline_predicts_each_sample_by_its_training_mean():
    from histoxai.evaluation.baseline import sample_mean_predictions
    from tests.evaluation.helpers import frame

    pred = pd.concat(
        [
            frame(["train", "train", "test"], "a", [1.0, 3.0, 9.0], [0, 0, 0]),
            frame(["train", "test"], "b", [10.0, 7.0], [0, 0]),
            frame(["test", "test"], "c", [5.0, np.nan], [0, 0]),
        ],
        ignore_index=True,
    )
    out = sample_mean_predictions(pred, ["md"])
    assert out["yhat_md"].tolist() == [2.0, 2.0, 2.0, 10.0, 10.0, 14 / 3, 14 / 3]  # c: pooled train mean
    assert out["y_md"].equals(pred["y_md"])


def test_seeds_give_mean_and_spread_and_a_per_seed_table(frames, tmp_path):
    pred, _ = frames
    seeds = {s: predictions_from_store_like(pred, s) for s in (0, 1, 2)}
    ev = evaluate(seeds[0], ["md"], seed_preds=seeds)
    each = [regression_metrics(*_test_pair(f))["r2"] for f in seeds.values()]
    assert ev.metrics["test/r2_md"] == pytest.approx(np.mean(each))
    assert ev.metrics["test/r2sd_md"] == pytest.approx(np.std(each, ddof=1))
    assert ev.headline["md"]["r2"] == pytest.approx(np.mean(each), abs=5e-4)
    write_report(tmp_path / "m", ev, seeds[0], info={"model": "m"})
    text = (tmp_path / "m" / "report.md").read_text()
    assert "mean over seeds [0, 1, 2]" in text and "± sd" in text and "## CNN per seed" in text
    assert set(pd.read_csv(tmp_path / "m" / "per_seed.csv")["seed"]) == {0, 1, 2}
    one = evaluate(seeds[0], ["md"])
    assert one.spread is None and "test/r2sd_md" not in one.metrics


def predictions_from_store_like(pred, seed):
    rng = np.random.default_rng(seed)
    return pred.assign(
        yhat_md=pred["y_md"] + rng.normal(0, (0.2 + 0.1 * seed) * pred["y_md"].std(), len(pred))
    )


def _test_pair(f):
    test = f[f["split"] == "test"]
    return test["y_md"].to_numpy(), test["yhat_md"].to_numpy()
