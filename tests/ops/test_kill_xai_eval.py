"""SIGKILL `histoxai xai-eval` at each write window: the previous report stays whole (or,
killed after its commit point, the killed run's report is finished by the next run, never
a mix of two), no half-written file is left in the report directory, and a second writer
on one report directory is refused at once."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from histoxai.io import finish_interrupted, output_lock
from tests.ops.conftest import histoxai, killed, write_params

pytestmark = pytest.mark.slow
REPORT = "reports/xai_eval/histoxai-cc"

WINDOWS = {  # (function wrapped, before/after, which call): what the kill leaves in the report dir
    "scoring, before the report": (("histoxai.xai_eval.report:write_report", "before"), 1, "previous"),
    "report half staged": (("histoxai.xai_eval.report:plot_shares", "before"), 1, "previous"),
    "committed, nothing moved in": (("histoxai.io:_roll_forward", "before"), 1, "committed"),
    "committed, half moved in": (("histoxai.io:_move_in", "after"), 2, "committed"),
}


@pytest.fixture(scope="module")
def explained(tmp_path_factory):
    """A tiny project with a saliency store and an xai-eval report (seed 0)."""
    root = tmp_path_factory.mktemp("xai")
    write_params(
        root,
        explain={"model_dir": "models/histoxai-cc", "output_dir": "data/saliency/histoxai-cc",
                 "methods": ["gradcam", "gradient"], "max_patches": 4, "batch_size": 4, "chunk_size": 4,
                 "device": "cpu"},
        xai_eval={"max_patches": 4, "steps": 2, "batch_size": 4, "sanity_patches": 0, "robustness_patches": 0,
                  "bootstrap": 10, "intervention_patches": 0, "n_bins": 1, "device": "cpu"},
    )  # fmt: skip
    for args in (["prepare"], ["train"], ["explain"], ["xai-eval"]):
        done = histoxai(root, *args)
        assert done.returncode == 0, f"{args}: {done.stderr[-3000:]}"
    return root


@pytest.fixture
def project(explained, tmp_path):
    root = tmp_path / "p"
    shutil.copytree(explained, root, symlinks=True)
    return root


def _report(root) -> dict[str, str]:
    """The report's data files (JSON, CSV, Markdown) by name, after checking that every
    file of a report is there and parses."""
    out = root / REPORT
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert names == ["metrics", "plots", "ranking.json", "report.md", "tables"], names
    json.loads((out / "ranking.json").read_text())
    json.loads((out / "metrics" / "cc.json").read_text())
    for csv in (out / "tables").iterdir():
        pd.read_csv(csv)
    assert {p.name for p in (out / "plots").iterdir()} >= {"curves_cc.png", "shares_cc.png"}
    return {
        str(p.relative_to(out)): p.read_text()
        for p in sorted(out.rglob("*"))
        if p.suffix in (".json", ".csv", ".md") and not any(part.startswith(".") for part in p.parts)
    }


def _leftovers(root) -> list[str]:
    return sorted(p.name for p in (root / REPORT).iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("window", list(WINDOWS))
def test_a_killed_xai_eval_leaves_one_whole_report(project, window):
    previous = _report(project)
    kill, nth, expected = WINDOWS[window]
    done = histoxai(project, "xai-eval", "--set", "base.seed=1", kill=kill, nth=nth)
    assert killed(done), done.stderr[-3000:]
    if expected == "previous":
        assert _report(project) == previous  # untouched, whatever was staged
    else:
        assert [name.startswith(".incoming.") for name in _leftovers(project)] == [True]
    with output_lock(project / REPORT):  # what the next run does first
        finish_interrupted(project / REPORT)
    recovered = _report(project)
    assert _leftovers(project) == []
    done = histoxai(project, "xai-eval", "--set", "base.seed=1")  # the next run
    assert done.returncode == 0, done.stderr[-3000:]
    fresh = _report(project)
    assert fresh != previous  # seed 1's report differs from seed 0's, so the checks can fail
    assert recovered == (previous if expected == "previous" else fresh)  # one run's report, never a mix
    assert _leftovers(project) == []


def test_a_second_xai_eval_on_one_report_is_refused_at_once(project):
    previous = _report(project)
    with output_lock(project / REPORT):  # a writer in progress
        done = histoxai(project, "xai-eval", "--set", "base.seed=1")
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"{REPORT} is being written by another process" in done.stderr
    assert _report(project) == previous and _leftovers(project) == []


def test_a_second_explain_on_one_store_is_refused_at_once(project):
    store = project / "data/saliency/histoxai-cc"
    before = {p.name: p.read_bytes() for p in (store / "maps").iterdir()}
    with output_lock(store):
        done = histoxai(project, "explain", "--set", "explain.methods=[gradient]")
    assert done.returncode == 2, done.stderr[-3000:]
    assert "data/saliency/histoxai-cc is being written by another process" in done.stderr
    assert {p.name: p.read_bytes() for p in (store / "maps").iterdir()} == before
