import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from histoxai.config import XaiEvalConfig
from histoxai.xai_eval import report
from histoxai.xai_eval.report import cascade_table, write_report
from histoxai.xai_eval.suite import evaluate_target, pool_seeds
from histoxai.xai_eval.tissue import labels_from_masks
from tests.xai_eval.conftest import RegionRedModel, input_gradient
from tests.xai_eval.helpers import blob_truth

SIZE, N = 16, 8
# a cascade of one method over two draws: mean, SD and the largest draw per block
STEPS = {"original": {"rank_corr": 1.0, "rank_corr_sd": 0.0, "rank_corr_max": 1.0},
         "head": {"rank_corr": 0.42, "rank_corr_sd": 0.1234, "rank_corr_max": 0.61}}  # fmt: skip


@pytest.fixture(scope="module")
def result():
    """A model reading red on the counted nuclei of a blob truth; the truth, its
    negation and an input gradient as methods (|map| rows on)."""
    truth = blob_truth(n=N, size=SIZE)
    region = torch.from_numpy(truth.instances[0] > 0)
    model = RegionRedModel(region, targets=("cc",)).eval()
    g = torch.Generator().manual_seed(0)
    images = torch.rand(N, 3, SIZE, SIZE, generator=g)
    images[:, 0][torch.from_numpy(truth.instances > 0)] = 0.95
    masks = np.where(truth.instances > 0, 1, 0).astype(np.uint8)
    maps = {"truth": truth.signed, "anti": -truth.signed, "grad": input_gradient(0)(model, images).numpy()}
    y = model(images)[:, 0].detach().numpy()
    cfg = XaiEvalConfig(steps=4, sanity_patches=2, robustness_patches=2, robustness_draws=3, bootstrap=50,
                        magnitude_variants=True)  # fmt: skip
    return evaluate_target(
        model, "cc", images, maps, patch_ids=np.arange(N), samples=np.repeat(["a", "b"], N // 2), y=y,
        y_hat=y + 0.01 * np.arange(N), labels=labels_from_masks(masks), score="higher",
        resolutions={k: (SIZE, SIZE) for k in maps}, cfg=cfg, truth=truth,
        explain_for=lambda name, rows: input_gradient(0) if name == "grad" else None,
        variant_pairs=[("truth", "anti")], shortcut_cue=np.linspace(0, 1, N), progress=False,
    )  # fmt: skip


def test_rows_are_methods_their_abs_variants_and_the_references(result):
    assert result.methods == ["truth", "truth|abs", "anti", "anti|abs", "grad", "grad|abs"]
    assert {"sobel", "darkness", "random", "oracle"} <= set(result.rows)
    assert len(result.per_patch) == len(result.rows) * N
    s = result.stats.set_index(["method", "metric"])
    assert s.loc[("truth", "auroc"), "mean"] == pytest.approx(1.0)
    assert s.loc[("anti", "auroc"), "mean"] == pytest.approx(0.0)
    assert s.loc[("anti|abs", "auroc"), "mean"] == pytest.approx(1.0)  # |map| forgives the sign
    # the model is linear in a 1x1 conv: randomising it only rescales |gradient|, so the
    # map's structure survives and the published check (similarity of |map|) fails it
    assert result.passes_sanity == {"grad": False, "grad|abs": False}
    assert s.loc[("grad", "max_sensitivity"), "n"] == 2


def test_report_is_written_inside_the_directory_and_the_headline_is_small(result, tmp_path):
    out = tmp_path / "xai_eval" / "tiny"
    out.mkdir(parents=True)
    (out / ".gitignore").write_text("/report.md\n")
    files = write_report(out, {"cc": result}, {"model": "tiny", "run_id": None})
    assert (out / ".gitignore").read_text() == "/report.md\n"
    assert {p.relative_to(out).as_posix() for p in files} >= {
        "metrics/cc.json", "ranking.json", "report.md", "tables/stats_cc.csv", "tables/nuclei_cc.csv",
        "plots/randomisation_cc.png", "plots/nuclei_cc.png", "plots/properties_cc.png",
    }  # fmt: skip
    metrics = json.loads((out / "metrics" / "cc.json").read_text())
    assert (
        set(metrics) <= {"top", "res", "score", "lo", "hi", "norm"}
        and metrics["lo"] <= metrics["score"] <= metrics["hi"]
    )
    v = result.verdict
    assert metrics["top"] == (v["top"] if v["status"] == "method" else v["status"])
    h, w = result.rows[v["top"]]["resolution"]
    assert metrics["res"] == f"{h}x{w}"  # the leader's native map resolution
    rank = json.loads((out / "ranking.json").read_text())
    entry = rank["targets"]["cc"]
    assert entry["methods"][0]["method"] in ("truth", "truth|abs", "anti|abs")
    text = (out / "report.md").read_text()
    assert "**Verdict:" in text and rank["rule"] in text and "### Per-nucleus relevance" in text
    assert "mean Spearman ρ of |map| over 5 re-initialisation draws" in text  # the config's sanity_draws
    assert "oracle@" not in text or "random@" in text
    assert set(pd.read_csv(out / "tables" / "shares_by_bin_cc.csv")["by"]) == {"target", "error"}
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_target_not_in_the_model_is_a_clear_error():
    model = RegionRedModel(torch.ones(SIZE, SIZE), targets=("cc",))
    with pytest.raises(ValueError, match="target 'md' is not an output of the model"):
        evaluate_target(
            model, "md", torch.rand(1, 3, SIZE, SIZE), {}, patch_ids=np.arange(1), samples=np.array(["a"]),
            y=np.zeros(1), y_hat=np.zeros(1), labels=torch.zeros(1, SIZE, SIZE, dtype=torch.long),
            score="higher", resolutions={}, cfg=XaiEvalConfig(),
        )  # fmt: skip


def test_a_failed_write_leaves_the_previous_report_whole(result, tmp_path, monkeypatch):
    out = tmp_path / "rep"
    write_report(out, {"cc": result}, {"model": "tiny"})
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report, "plot_cascade", broken)  # fails after the tables were built
    with pytest.raises(RuntimeError, match="disk full"):
        write_report(out, {"cc": result}, {"model": "tiny", "run": "second"})
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before


def test_dvc_yaml_declares_every_file_the_report_writes(result, tmp_path, repo_root):
    import yaml

    stage = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]["xai_eval"]["do"]
    prefix = "reports/xai_eval/histoxai-${key}/"
    declared = []
    for section in ("outs", "metrics", "plots"):
        for entry in stage.get(section, []):
            path = next(iter(entry)) if isinstance(entry, dict) else entry
            assert path.startswith(prefix), path
            declared.append(path[len(prefix) :])
    out = tmp_path / "declared"
    files = write_report(out, {"cc": result}, {"model": "tiny"})
    for f in files:
        rel = f.relative_to(out).as_posix()
        assert any(rel == d or rel.startswith(d + "/") for d in declared), rel


def test_pooled_seeds_pass_the_sanity_gate_only_if_every_trained_model_does(result, tmp_path):
    """A method whose randomisation check one trained model fails fails the pooled gate,
    and the report says on which seed; passing on every seed passes."""
    passing = replace(result, passes_sanity={"grad": True, "grad|abs": True})
    cfg = XaiEvalConfig(steps=4, bootstrap=50, magnitude_variants=True)
    pooled = pool_seeds({0: passing, 1: result}, (SIZE, SIZE), cfg, 0, True)
    assert pooled.passes_sanity == {"grad": False, "grad|abs": False}
    assert pooled.sanity_by_seed["grad"] == {0: True, 1: False}
    assert "grad" in pooled.verdict["failed_sanity"] and set(pooled.cascade_by_seed) == {0, 1}
    assert pool_seeds({0: passing, 2: passing}, (SIZE, SIZE), cfg, 0, True).passes_sanity["grad"] is True

    out = tmp_path / "report"
    out.mkdir()
    write_report(out, {"cc": pooled}, {"model": "tiny", "run_id": None})
    text = (out / "report.md").read_text()
    assert "`grad` (on seed 1 of 0, 1)" in text and "grad · seed 0" in text and "grad · seed 1" in text
    entry = json.loads((out / "ranking.json").read_text())["targets"]["cc"]
    grad = next(m for m in entry["methods"] if m["method"] == "grad")
    assert grad["passes_sanity"] is False and grad["sanity_by_seed"] == {"0": True, "1": False}
    write_report(
        out, {"cc": pool_seeds({0: result, 1: result}, (SIZE, SIZE), cfg, 0, True)}, {"model": "tiny"}
    )
    assert "`grad` (on all 2 seeds)" in (out / "report.md").read_text()


def test_the_cascade_table_gives_the_spread_over_re_initialisation_draws(result):
    table = cascade_table(replace(result, cascade={"grad": STEPS}, cascade_by_seed={}))
    assert table.loc["grad", "head"] == "0.42 ± 0.12 (max 0.61)" and table.loc["grad", "original"] == 1.0


def test_the_cascade_plot_marks_each_methods_largest_draw(result, tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(report.plt, "close", figures.append)  # keep the figure to read it
    report.plot_cascade(replace(result, cascade={"grad": STEPS}, cascade_by_seed={}), tmp_path / "c.png")
    markers = [line for line in figures[0].axes[0].lines if line.get_marker() == "v"]
    assert (tmp_path / "c.png").stat().st_size > 0
    assert len(markers) == 1  # the draw the gate reads, per block:
    assert list(markers[0].get_ydata()) == pytest.approx([1.0, 0.61])
    assert not [line for line in figures[0].axes[1].lines if line.get_marker() == "v"]  # SSIM: no draws
