"""A tiny pipeline output for the dashboard tests: a patch store, two saliency stores
(``mdfa``: md and fa, four variants; ``cc``: cc on half of the patches, one variant) and
an evaluation report."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from histoxai.config import PhantomConfig, SplitConfig
from histoxai.dashboard.catalog import Catalog, load_catalog
from histoxai.dashboard.synthetic import fake_saliency
from histoxai.data.splits import assign_splits
from histoxai.data.store import write_store


def make_pipeline(root: Path, n_samples: int = 2, grid: int = 5, size: int = 32) -> dict[str, Path]:
    """Write ``data/patches``, ``data/saliency/{mdfa,cc}`` and ``reports/`` under ``root``."""
    from histoxai.data.phantom import generate_phantom

    blocks, card = generate_phantom(PhantomConfig(n_samples=n_samples, grid_vox=(grid, grid)), size, seed=0)
    splits = partial(assign_splits, cfg=SplitConfig(), seed=0)
    patches = write_store(root / "data" / "patches", blocks, card, splits)
    sal = root / "data" / "saliency"
    fake_saliency(patches, sal / "mdfa", ["md", "fa"], seed=1)
    half = np.arange(0, len(patches), 2)
    fake_saliency(
        patches, sal / "cc", ["cc"], {"gradcampp": {"method": "gradcampp", "params": {}}}, half, seed=2
    )
    report = root / "reports" / "evaluate" / "mdfa"
    report.mkdir(parents=True)
    metrics = {
        "test/r2_md": 0.81,
        "test/r2_fa": 0.55,
        "val/r2_md": 0.84,
        "test/mae_md": 0.1,
        "baseline/test/r2_md": 0.42,
        "sample/s1/in/r2_md": 0.79,
        "sample/s2/out/r2_md": 0.61,
        "baseline/sample/s1/in/r2_md": 0.3,
        "samplemean/test/r2_md": 0.05,
        "samplemean/sample/s1/in/r2_md": 0.0,
        "ceiling/r2_md": 0.97,
    }
    (report / "all_metrics.json").write_text(json.dumps(metrics))
    ranking = {
        "rule": "mean rank over the metrics; methods that fail the sanity check come last",
        "targets": {
            "md": {
                "trusted": "layercam",
                "methods": [
                    {
                        "method": "layercam",
                        "score": 1.5,
                        "passes_sanity": True,
                        "beats_random": 2,
                        "n_metrics": 2,
                        "metrics": {
                            "deletion_auc": 0.21,
                            "pointing_game": 0.8,
                            "insertion_auc_normalised": 0.61,
                            "road_morf_auc_normalised": 0.33,
                            "mass_accuracy_counted_nuclei": 0.71,
                            "signed_correlation_with_truth": 0.52,
                            "max_sensitivity_under_noise": 0.12,
                        },
                    },
                    {
                        "method": "gradcampp",
                        "score": 2.0,
                        "passes_sanity": False,
                        "beats_random": 1,
                        "n_metrics": 2,
                        "metrics": {
                            "deletion_auc": 0.25,
                            "pointing_game": 0.6,
                            "insertion_auc_normalised": 0.51,
                            "road_morf_auc_normalised": 0.36,
                            "mass_accuracy_counted_nuclei": 0.55,
                            "signed_correlation_with_truth": 0.41,
                            "max_sensitivity_under_noise": 0.2,
                        },
                    },
                ],
            }
        },
    }
    (root / "reports" / "xai_eval" / "mdfa" / "tables").mkdir(parents=True)
    ids = np.arange(0, len(patches), 3)
    per_patch = pd.DataFrame(
        {
            "method": np.repeat(["layercam", "gradcampp", "not_a_variant"], len(ids)),
            "patch_id": np.tile(ids, 3),
            "mass_accuracy": np.tile((ids % 7) / 7.0, 3),
            "deletion_auc": np.tile(-ids / 10.0, 3),
        }
    )
    per_patch.to_csv(root / "reports" / "xai_eval" / "mdfa" / "tables" / "per_patch_md.csv", index=False)
    (root / "reports" / "xai_eval" / "mdfa" / "plots").mkdir()
    _shares_chart(root / "reports" / "xai_eval" / "mdfa" / "plots" / "shares_md.png")
    (root / "reports" / "xai_eval" / "mdfa" / "ranking.json").write_text(json.dumps(ranking))
    return {"root": root, "patches": root / "data" / "patches", "saliency": sal, "reports": root / "reports"}


def _shares_chart(path: Path) -> None:
    """A stand-in for xai-eval's tissue-share chart (stacked bars per method)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 2))
    bottom = np.zeros(2)
    for share, name in zip(([0.5, 0.3], [0.3, 0.4], [0.2, 0.3]), ("nuclei", "stroma", "air")):
        ax.bar(["layercam", "gradcampp"], share, bottom=bottom, label=name)
        bottom += share
    ax.legend(fontsize=6)
    ax.set_title("attribution share per tissue class (md)", fontsize=8)
    fig.savefig(path, dpi=80)
    plt.close(fig)


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory) -> dict[str, Path]:
    return make_pipeline(tmp_path_factory.mktemp("pipeline"))


@pytest.fixture(scope="session")
def catalog(pipeline) -> Catalog:
    return load_catalog(
        pipeline["patches"], saliency_root=pipeline["saliency"], reports_dir=pipeline["reports"]
    )
