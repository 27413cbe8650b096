"""Loading the stores: targets, variants, problems named by path, reports."""

from __future__ import annotations

import json

import numpy as np

from histoxai.dashboard.catalog import load_catalog


def test_catalog_lists_targets_variants_and_samples(catalog):
    assert list(catalog.tables) == ["md", "fa", "cc"]  # store TARGETS order
    assert catalog.variants("md") == ["gradcampp", "layercam", "smoothgrad_s0.1", "smoothgrad_s0.2"]
    assert catalog.methods("md") == {
        "gradcampp": ["gradcampp"],
        "layercam": ["layercam"],
        "smoothgrad": ["smoothgrad_s0.1", "smoothgrad_s0.2"],
    }
    assert catalog.variants("cc") == ["gradcampp"]
    assert catalog.samples == ["s1", "s2"]
    assert catalog.problems == []
    assert catalog.variant_label("md", "smoothgrad_s0.2") == "smoothgrad_s0.2 (sigma=0.2, n=16)"


def test_tables_hold_the_meta_of_their_target(catalog):
    md = catalog.tables["md"]
    meta = catalog.sources["mdfa"].meta
    rows = meta[meta["target"] == "md"].sort_values("patch_id")
    np.testing.assert_array_equal(md.patch_id, rows["patch_id"].to_numpy())
    np.testing.assert_allclose(md.values["delta"], rows["delta"].to_numpy())
    assert [md.sample_names[c] for c in md.sample[:3]] == list(rows["sample"].astype(str)[:3])
    lo, hi = md.bounds["y"]
    assert lo <= np.percentile(md.values["y"], 1) and hi >= np.percentile(md.values["y"], 99)
    cc = catalog.tables["cc"]
    assert len(cc) == len(md) // 2 + len(md) % 2
    assert cc.positions([0, 1, 2]).tolist() == [0, -1, 1]


def test_missing_and_broken_stores_become_problems_naming_the_path(tmp_path, pipeline):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    cat = load_catalog(tmp_path / "nowhere", [broken, tmp_path / "absent"])
    paths = {p.path: p.message for p in cat.problems}
    assert str(tmp_path / "nowhere") in paths and "index.parquet" in paths[str(tmp_path / "nowhere")]
    assert "not valid JSON" in paths[str(broken)]
    assert "manifest.json is missing" in paths[str(tmp_path / "absent")]
    assert not cat.ok and cat.tables == {}


def test_missing_saliency_root_is_a_problem(tmp_path, pipeline):
    cat = load_catalog(pipeline["patches"], saliency_root=tmp_path / "saliency")
    assert cat.patches is not None
    assert [p.path for p in cat.problems] == [str(tmp_path / "saliency")]


def test_saliency_from_another_patch_store_is_refused(tmp_path, pipeline):
    from tests.dashboard.conftest import make_pipeline

    small = make_pipeline(tmp_path / "small", n_samples=1, grid=2, size=16)
    cat = load_catalog(small["patches"], [pipeline["saliency"] / "mdfa"])
    assert "different patch store" in cat.problems[0].message
    assert "mdfa" not in cat.sources


def test_reports_are_read(catalog, tmp_path, pipeline):
    assert catalog.metrics["mdfa"]["test/r2_md"] == 0.81
    out = tmp_path / "reports" / "xai_eval" / "mdfa"
    out.mkdir(parents=True)
    (out / "ranking.json").write_text(
        json.dumps({"rule": "mean rank", "targets": {"md": {"trusted": "layercam"}}})
    )
    (tmp_path / "reports" / "evaluate" / "cc").mkdir(parents=True)
    (tmp_path / "reports" / "evaluate" / "cc" / "all_metrics.json").write_text("{broken")
    cat = load_catalog(
        pipeline["patches"], saliency_root=pipeline["saliency"], reports_dir=tmp_path / "reports"
    )
    assert cat.rankings["mdfa"]["targets"]["md"]["trusted"] == "layercam"
    assert [p.path for p in cat.problems] == [
        str(tmp_path / "reports" / "evaluate" / "cc" / "all_metrics.json")
    ]


def test_per_patch_xai_eval_metrics_become_fields(catalog):
    md = catalog.tables["md"]
    assert set(md.metrics) == {"layercam", "gradcampp"}  # methods that are not variants are skipped
    acc = md.metrics["layercam"]["mass_accuracy"]
    scored = md.patch_id % 3 == 0
    assert np.isfinite(acc[scored]).all() and np.isnan(acc[~scored]).all()
    np.testing.assert_allclose(acc[scored], (md.patch_id[scored] % 7) / 7.0)


def test_per_patch_rows_of_further_training_seeds_are_not_shown(catalog):
    """xai-eval pools the maps of several trained models (``seed`` column, the first seed's
    rows first); the store the dashboard shows is the first seed's, so are its metrics."""
    import pandas as pd

    from histoxai.dashboard.catalog import _attach_metrics

    md = catalog.tables["md"]
    ids = md.patch_id[:4]
    frame = pd.DataFrame(
        {"method": "layercam", "seed": np.repeat([3, 5], 4), "patch_id": np.tile(ids, 2),
         "mass_accuracy": np.repeat([0.1, 0.9], 4)}
    )  # fmt: skip
    _attach_metrics(catalog, md.source, md.target, frame)
    shown = md.metrics["layercam"]
    assert "seed" not in shown
    np.testing.assert_allclose(shown["mass_accuracy"][md.positions(ids)], 0.1)
