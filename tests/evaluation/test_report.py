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
    ev = evaluate(pred, ["md", "fa"], base, {"md": 0.93, "fa": 0.9, "cc": 1.0})
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
    ev = evaluate(pred, ["md", "fa"], base, {"md": 0.93})
    out = tmp_path / "evaluate" / "m"
    out.mkdir(parents=True)
    (out / ".gitignore").write_text("/report.md\n")  # DVC's, beside its outputs: kept
    (out / "plots").mkdir()
    (out / "plots" / "maps_gone.png").write_bytes(b"old")  # the plots folder is replaced whole
    write_report(out, ev, pred, base, {"model": "m"}, ["a note"])
    assert (out / ".gitignore").read_text() == "/report.md\n"
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp") or ".old-" in p.name]
    assert json.loads((out / "metrics.json").read_text()) == pytest.approx(ev.metrics)
    text = (out / "report.md").read_text()
    assert "# Evaluation: m" in text and "a note" in text and "![maps_s3](plots/maps_s3.png)" in text
    assert {p.name for p in (out / "plots").iterdir()} == {
        "scatter_md.png", "scatter_fa.png", "maps_s1.png", "maps_s2.png", "maps_s3.png",
    }  # fmt: skip
    per_sample = pd.read_csv(out / "per_sample.csv", index_col=[0, 1])
    assert set(per_sample.index) == {(m, s) for m in ("CNN", "baseline") for s in ("s1", "s2", "s3")}
    assert len(pd.read_parquet(out / "baseline_predictions.parquet")) == len(pred)
    write_report(out, evaluate(pred, ["md", "fa"]), pred, None, {"model": "m"})  # baseline turned off
    assert not (out / "baseline_predictions.parquet").exists()  # a stale report file goes


def test_a_failed_report_leaves_the_previous_one_untouched(frames, tmp_path, monkeypatch):
    pred, _ = frames
    pred = pred[pred["sample"] == "s1"]
    ev = evaluate(pred, ["md"])
    out = tmp_path / "m"
    write_report(out, ev, pred, info={"model": "m"})
    before = (out / "metrics.json").read_text()

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report, "plot_sample_maps", broken)
    with pytest.raises(RuntimeError):
        write_report(out, evaluate(pred.assign(yhat_md=0.0), ["md"]), pred, info={"model": "m"})
    assert (out / "metrics.json").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary left behind
