"""``histoxai xai-eval`` on a tiny pipeline output: patch store with masks and a
shortcut cue, a checkpoint of a tiny regressor, and its saliency store."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from histoxai import cli
from histoxai.config import ModelConfig, VariantConfig, load_config
from histoxai.data.store import SampleBlock, write_store
from histoxai.explain.methods import resolve_variants
from histoxai.explain.runner import explain_patches
from histoxai.models import build_regressor, save_checkpoint
from histoxai.stages import xai_eval as stage
from histoxai.xai_eval import inputs

NAME = "histoxai-mdfa"
PARAMS = """
xai_eval:
  max_patches: 6
  steps: 3
  batch_size: 4
  sanity_patches: 2
  robustness_patches: 2
  robustness_draws: 2
  bootstrap: 50
  intervention_patches: 0
  n_bins: 2
explain:
  model_uri: models:/histoxai-mdfa@candidate
"""


def blocks(size=32, n=6, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for k in range(2):
        rows, cols = np.divmod(np.arange(n), 3)
        md = rng.uniform(0.3, 2.0, n)
        table = pd.DataFrame(
            {"row": rows, "col": cols, "md": md, "fa": rng.uniform(0.1, 0.9, n), "split_random": "test",
             "shortcut_cue": 0.15 * (md - 0.1) / 2.3}
        )  # fmt: skip
        images = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
        masks = rng.integers(0, 4, size=(n, size, size), dtype=np.uint8)
        out.append(SampleBlock(f"s{k + 1}", images, table, masks))
    return out


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread beats two contending ones
    root = tmp_path_factory.mktemp("repo")
    store = write_store(root / "data/patches", blocks(), {"source": "test"})
    cfg = ModelConfig(backbone="resnet10t", targets=("md", "fa"), hidden_width=8, feature_width=4)
    torch.manual_seed(0)
    model = build_regressor(cfg, [1.0, 0.5], [0.5, 0.2]).eval()
    save_checkpoint(root / "models" / NAME / "model.pt", model, cfg)
    variants = resolve_variants(
        ["gradcam", VariantConfig("sg_a", "smoothgrad", {"sigma": 0.2, "n": 2}),
         VariantConfig("sg_b", "smoothgrad", {"sigma": 0.3, "n": 2})]
    )  # fmt: skip
    explain_patches(
        model, store, store.ids(), root / "data/saliency" / NAME, variants, split_scheme="random",
        batch_size=8, device="cpu", progress=False,
        manifest={"model_uri": f"models:/{NAME}/1", "model_name": NAME, "model_version": "1", "run_id": ""},
    )  # fmt: skip
    (root / "params.yaml").write_text(PARAMS)
    yield root
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_stage_writes_metrics_ranking_report_and_plots(repo, monkeypatch, capsys):
    monkeypatch.chdir(repo)
    assert cli.main(["xai-eval", "--checkpoint", f"models/{NAME}/model.pt"]) == 0
    out = repo / "reports/xai_eval" / NAME
    metrics = {t: json.loads((out / "metrics" / f"{t}.json").read_text()) for t in ("md", "fa")}
    assert all("top" in v and set(v) <= {"top", "res", "score", "lo", "hi", "norm"} for v in metrics.values())
    rank = json.loads((out / "ranking.json").read_text())
    assert all(metrics[t]["top"] == (e["trusted"] or e["status"]) for t, e in rank["targets"].items())
    assert set(rank["targets"]) == {"md", "fa"}
    for entry in rank["targets"].values():
        assert entry["status"] in {"method", "tie", "none"} and entry["verdict"]
        assert entry["trusted"] in {None, "gradcam", "sg_a", "sg_b"}
    md = rank["targets"]["md"]
    assert sorted(m["method"] for m in md["methods"]) == ["gradcam", "sg_a", "sg_b"]
    assert all(m["sanity_checked"] for m in md["methods"])
    text = (out / "report.md").read_text()
    assert "## md" in text and "## fa" in text and "6 of 12 explained" in text
    assert "Shortcut: positive relevance on the border band" in text and "### Randomisation" in text
    plots = {p.name for p in (out / "plots").iterdir()}
    assert {"curves_md.png", "randomisation_fa.png", "shares_by_bin_md.png", "properties_md.png"} <= plots
    tables = {p.name for p in (out / "tables").iterdir()}
    assert {"stats_md.csv", "per_patch_fa.csv", "nuclei_md.csv", "nuclei_summary_fa.csv"} <= tables
    stats = pd.read_csv(out / "tables" / "stats_md.csv")
    assert {"mass_accuracy", "road", "mprt_similarity", "max_sensitivity"} <= set(stats["metric"])
    assert (stats["lo"] <= stats["mean"] + 1e-9).all() and (stats["mean"] <= stats["hi"] + 1e-9).all()
    printed = capsys.readouterr().out
    assert f"xai-eval: reports/xai_eval/{NAME}" in printed and "  md: " in printed


@pytest.mark.slow
def test_same_seed_same_metrics_and_the_report_dir_is_kept(repo, monkeypatch):
    """Two runs with one seed give identical tables (SmoothGrad and sanity re-explanations
    are seeded); files the stage does not own (DVC's .gitignore) stay."""
    monkeypatch.chdir(repo)
    out = repo / "reports/xai_eval" / NAME
    out.mkdir(parents=True, exist_ok=True)
    (out / ".gitignore").write_text("/report.md\n")
    runs = []
    for _ in range(2):
        assert cli.main(["xai-eval", "--checkpoint", f"models/{NAME}/model.pt"]) == 0
        runs.append(
            {p.name: p.read_bytes() for p in sorted((out / "tables").iterdir())}
            | {p.name: p.read_bytes() for p in sorted((out / "metrics").iterdir())}
        )
    assert runs[0] == runs[1]
    assert (out / ".gitignore").read_text() == "/report.md\n"


@pytest.mark.slow
def test_results_are_logged_to_a_real_mlflow_run(repo, monkeypatch, tmp_path):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.chdir(repo)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = mlflow.MlflowClient(uri)
    run = client.create_run(client.create_experiment("xai"))
    (repo / "models" / NAME / "run.json").write_text(
        json.dumps({"run_id": run.info.run_id, "model_name": NAME})
    )
    overrides = [
        "xai_eval.sanity_patches=0",
        "xai_eval.robustness_patches=0",
        f"xai_eval.output_dir={tmp_path / 'out'}",
    ]
    stage.run(load_config("params.yaml", overrides), _args(checkpoint=f"models/{NAME}/model.pt"))
    logged = client.get_run(run.info.run_id).data.metrics
    assert "xai/md/gradcam/auroc" in logged and "xai/fa/sg_a/road" in logged
    names = {a.path for a in client.list_artifacts(run.info.run_id, "xai_eval")}
    assert {"xai_eval/ranking.json", "xai_eval/report.md", "xai_eval/plots", "xai_eval/tables"} <= names


def _args(**kw):
    import argparse

    return argparse.Namespace(**{"saliency_dir": None, "checkpoint": None, **kw})


def test_missing_saliency_store_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("{}\n")
    assert cli.main(["xai-eval", "--saliency-dir", "data/saliency/nope"]) == 2
    assert "no saliency store at data/saliency/nope" in capsys.readouterr().err


def test_default_saliency_dir_follows_the_explained_model():
    cfg = load_config(None, ["explain.model_uri=models:/histoxai-cc@candidate"])
    assert str(inputs.saliency_dir(cfg)) == "data/saliency/histoxai-cc"
    assert str(inputs.saliency_dir(cfg, "elsewhere")) == "elsewhere"
    with pytest.raises(ValueError, match="expected models:/NAME@ALIAS"):
        inputs.model_name("runs:/abc/model")


def test_stage_is_thin():
    from pathlib import Path

    assert len(Path(stage.__file__).read_text().splitlines()) <= 80


def test_checkpoint_of_another_run_than_the_maps_is_refused(repo, monkeypatch, tmp_path):
    monkeypatch.chdir(repo)
    sal = repo / "data/saliency" / NAME / "manifest.json"
    original = sal.read_text()
    try:
        sal.write_text(json.dumps({**json.loads(original), "run_id": "other-run"}))
        model = torch.load(repo / "models" / NAME / "model.pt", weights_only=True)
        model["extra"] = {"run_id": "this-run"}
        torch.save(model, tmp_path / "model.pt")
        with pytest.raises(
            ValueError, match="maps of the model of run other-run, but .* is from run this-run"
        ):
            stage.run(load_config("params.yaml"), _args(checkpoint=str(tmp_path / "model.pt")))
    finally:
        sal.write_text(original)
