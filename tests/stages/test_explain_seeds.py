"""Training seeds enter the explanation verdict: ``histoxai train`` with two ``base.seeds``,
``histoxai explain`` of its output explains both models (the further one into
``seeds/<seed>/``), and ``histoxai xai-eval`` pools their maps."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from histoxai import cli
from histoxai.explain.store import SaliencyStore

XAI = {"max_patches": 8, "steps": 2, "batch_size": 8, "sanity_patches": 2, "robustness_patches": 0,
       "bootstrap": 60, "intervention_patches": 0, "n_bins": 2}  # fmt: skip


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A phantom store and a tiny model trained with base.seeds [3, 5]; params.yaml."""
    from histoxai.config import to_dict
    from tests.training.conftest import phantom_store, tiny_config

    root = tmp_path_factory.mktemp("seeds")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    store = phantom_store(root / "data/patches", grid=4)
    cfg = tiny_config(store, root, "train.epochs=1", "base.seeds=[3, 5]", "model.targets=[md]")
    params = to_dict(cfg)
    params["explain"].update(methods=["gradcam", "gradient"], split="all", max_patches=8, device="cpu")
    params["xai_eval"].update(XAI)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        assert cli.main(["train"]) == 0
    yield root, cfg.model.registered_name
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_every_seed_is_explained_and_xai_eval_pools_them(project, monkeypatch, capsys):
    root, name = project
    monkeypatch.chdir(root)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    model_dir, sal_dir = f"models/{name}", f"data/saliency/{name}"
    sets = ["--set", f"explain.model_dir={model_dir}", "--set", f"explain.output_dir={sal_dir}"]
    assert cli.main(["explain", *sets]) == 0
    main, sub = SaliencyStore(root / sal_dir), SaliencyStore(root / sal_dir / "seeds/5")
    assert "seed" not in main.manifest  # the main store is the registered (first) seed's, as before
    np.testing.assert_array_equal(sub.patch_ids, main.patch_ids)
    assert sub.manifest["complete"] == main.manifest["complete"] == ["md__gradcam", "md__gradient"]
    assert sub.variants == main.variants and sub.manifest["seeds"] == [3, 5] and sub.manifest["seed"] == 5
    assert sub.manifest["checkpoint"] == f"{model_dir}/seeds/5/model.pt"
    # the sub-store holds the seed-5 model's predictions and maps, not the first model's
    pred = pd.read_parquet(root / model_dir / "seeds/5/predictions.parquet").set_index("patch_id")
    np.testing.assert_allclose(sub.meta["y_hat"], pred.loc[sub.patch_ids, "yhat_md"], rtol=1e-4, atol=1e-4)
    assert not np.allclose(sub.read("md", "gradient"), main.read("md", "gradient"))

    # started again, both stores are complete and kept as they are
    before = (root / sal_dir / "seeds/5/maps/md__gradient.npy").stat().st_mtime_ns
    assert cli.main(["explain", *sets]) == 0
    assert (root / sal_dir / "seeds/5/maps/md__gradient.npy").stat().st_mtime_ns == before

    assert cli.main(["xai-eval", "--saliency-dir", sal_dir, "--checkpoint", f"{model_dir}/model.pt"]) == 0
    out = root / "reports/xai_eval" / name
    rank = json.loads((out / "ranking.json").read_text())
    assert rank["seeds"] == [3, 5]
    per_patch = pd.read_csv(out / "tables/per_patch_md.csv")
    assert per_patch.groupby("seed")["patch_id"].nunique().to_dict() == {3: 8, 5: 8}
    # the randomisation check runs on both seeds' models; a method passes only if it passes on each
    sanity = per_patch[per_patch["method"] == "gradcam"].groupby("seed")["mprt_similarity"].count()
    assert sanity.to_dict() == {3: 2, 5: 2}
    for m in rank["targets"]["md"]["methods"]:
        assert set(m["sanity_by_seed"]) == {"3", "5"}
        assert m["passes_sanity"] == all(m["sanity_by_seed"].values())
    stats = pd.read_csv(out / "tables/stats_md.csv").set_index(["method", "metric"])
    pooled = per_patch[per_patch["method"] == "gradcam"]["road"].mean()
    assert stats.loc[("gradcam", "road"), "mean"] == pytest.approx(pooled, rel=1e-9)
    text = (out / "report.md").read_text()
    assert "(training seed, sample) cells" in text and "seeds [3, 5]" in text and "**seeds**: 3, 5" in text


@pytest.mark.slow
def test_a_seed_store_of_another_run_or_without_its_model_is_refused(project, monkeypatch, tmp_path, capsys):
    import shutil

    root, name = project
    monkeypatch.chdir(root)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    sal = tmp_path / "sal"
    sets = ["--set", f"explain.model_dir=models/{name}", "--set", f"explain.output_dir={sal}"]
    assert cli.main(["explain", *sets]) == 0
    args = ["xai-eval", "--saliency-dir", str(sal), "--set", f"xai_eval.output_dir={tmp_path / 'out'}"]
    manifest = json.loads((sal / "seeds/5/manifest.json").read_text())
    (sal / "seeds/5/manifest.json").write_text(json.dumps({**manifest, "run_id": "another-run"}))
    assert cli.main([*args, "--checkpoint", f"models/{name}/model.pt"]) == 2
    assert "seeds/5: its manifest's run_id differs from that of" in capsys.readouterr().err
    (sal / "seeds/5/manifest.json").write_text(json.dumps(manifest))
    shutil.copy(root / "models" / name / "model.pt", tmp_path / "model.pt")  # no seeds/ beside it
    assert cli.main([*args, "--checkpoint", str(tmp_path / "model.pt")]) == 2
    assert f"training seed 5 but its model {tmp_path}/seeds/5/model.pt is missing" in capsys.readouterr().err
