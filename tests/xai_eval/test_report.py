import json

import numpy as np
import pandas as pd
import pytest
import torch

from histoxai.data.store import MASK_CLASSES
from histoxai.xai_eval.report import write_report
from histoxai.xai_eval.suite import SuiteSettings, evaluate_target
from histoxai.xai_eval.tissue import labels_from_masks
from tests.xai_eval.conftest import RegionRedModel

SIZE, N = 16, 8


@pytest.fixture(scope="module")
def result():
    """A model that counts red in the top-left quadrant, where the nuclei are; one map
    on the nuclei and one on everything else."""
    region = torch.zeros(SIZE, SIZE)
    region[:8, :8] = 1.0
    model = RegionRedModel(region, targets=("cc",)).eval()
    g = torch.Generator().manual_seed(0)
    images = torch.rand(N, 3, SIZE, SIZE, generator=g)
    masks = torch.where(region.bool(), MASK_CLASSES.index("nuclei"), MASK_CLASSES.index("stroma"))
    masks = masks.expand(N, -1, -1).to(torch.uint8).clone()
    jitter = 1e-3 * torch.rand(N, SIZE, SIZE, generator=g)
    maps = {"true": (region + jitter).numpy(), "anti": (1 - region + jitter).numpy()}
    y = model(images)[:, 0].detach().numpy()
    return evaluate_target(
        model, "cc", images, maps, patch_ids=np.arange(N), y=y, y_hat=y + 0.01 * np.arange(N),
        labels=labels_from_masks(masks), masks=masks, variant_pairs=[("true", "anti")],
        shortcut_cue=np.linspace(0, 1, N), settings=SuiteSettings(steps=4, sanity_patches=2, stability_patches=2),
        progress=False,
    )  # fmt: skip


def test_suite_measures_every_method_and_both_baselines(result):
    assert list(result.summary.index) == ["true", "anti", "random", "sobel"]
    assert result.methods == ["true", "anti"]
    assert result.summary.loc["true", "auroc"] == pytest.approx(1.0)
    assert result.summary.loc["anti", "auroc"] == pytest.approx(0.0)
    assert result.summary.loc["true", "deletion_auc"] > result.summary.loc["anti", "deletion_auc"]
    assert result.shares["true"]["attribution"]["nuclei"] == pytest.approx(1.0, abs=5e-3)
    assert len(result.per_patch) == 4 * N
    assert result.summary.loc["sobel", "sanity_pass"] == 0.0  # a model-independent map
    assert set(result.passes_sanity) == set()  # no re-explainer given for the methods


def test_report_files_load_and_name_the_method_to_trust(result, tmp_path):
    out = write_report(tmp_path / "xai_eval" / "tiny", {"cc": result}, {"model": "tiny", "run_id": None})
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["cc/true/auroc"] == pytest.approx(1.0)
    assert "cc/true_vs_anti/variant_rank_corr" in metrics and "cc/random/border_ratio" in metrics
    assert all(isinstance(v, float) and np.isfinite(v) for v in metrics.values())
    rank = json.loads((out / "ranking.json").read_text())
    assert rank["targets"]["cc"]["trusted"] == "true"
    assert [m["method"] for m in rank["targets"]["cc"]["methods"]] == ["true", "anti"]
    assert set(rank["targets"]["cc"]["baselines"]) == {"random", "sobel"}
    text = (out / "report.md").read_text()
    assert (
        "Method to trust: `true`" in text
        and rank["rule"] in text
        and "Nuclei share by measured cc bin" in text
    )
    assert set(pd.read_csv(out / "shares_by_bin_cc.csv")["by"]) == {"target", "error"}
    assert sorted(p.name for p in (out / "plots").iterdir()) == [
        "curves_cc.png", "randomisation_cc.png", "shares_by_bin_cc.png", "shares_cc.png",
    ]  # fmt: skip
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_target_not_in_the_model_is_a_clear_error(result):
    model = RegionRedModel(torch.ones(SIZE, SIZE), targets=("cc",))
    with pytest.raises(ValueError, match="target 'md' is not an output of the model"):
        evaluate_target(
            model, "md", torch.rand(1, 3, SIZE, SIZE), {}, patch_ids=np.arange(1), y=np.zeros(1),
            y_hat=np.zeros(1), labels=torch.zeros(1, SIZE, SIZE, dtype=torch.long),
        )  # fmt: skip
