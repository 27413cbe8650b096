import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from histoxai.data.store import SampleBlock, write_store
from histoxai.evaluation import baseline
from histoxai.evaluation.baseline import (
    baseline_predictions,
    fit_polynomial,
    nuclei_counts,
    polynomial_powers,
    structure_tensor_coherence,
)


def stripes(size: int, angle_deg: float, period: float = 6.0) -> np.ndarray:
    r, c = np.mgrid[:size, :size]
    t = np.deg2rad(angle_deg)
    return 0.5 + 0.5 * np.sin(2 * np.pi * (c * np.cos(t) + r * np.sin(t)) / period)


def test_polynomial_terms_are_all_monomials_up_to_the_degree():
    assert len(polynomial_powers(2, 2)) == 6  # 1, a, b, a², ab, b²
    assert len(polynomial_powers(2, 3)) == 10
    assert polynomial_powers(2, 2).sum(axis=1).max() == 2


def test_fit_recovers_a_known_quadratic_relation():
    rng = np.random.default_rng(0)
    x = rng.uniform([0, 0], [500, 1], size=(200, 2))  # density per mm², coherence

    def truth(x):
        a, b = x[:, 0], x[:, 1]
        return 0.3 + 2e-3 * a - 0.8 * b + 1e-3 * a * b + 1e-6 * a**2

    fit = fit_polynomial(x, truth(x), degree=2)
    new = rng.uniform([0, 0], [500, 1], size=(50, 2))
    np.testing.assert_allclose(fit.predict(new), truth(new), atol=1e-9)
    linear = fit_polynomial(x, truth(x), degree=1)
    assert np.abs(linear.predict(new) - truth(new)).max() > 1e-4  # degree matters
    with pytest.raises(ValueError, match="degree 2 needs >= 6 training rows"):
        fit_polynomial(x[:5], truth(x[:5]), 2)


def test_fit_skips_rows_with_missing_values():
    x = np.column_stack([np.arange(10.0), np.arange(10.0) ** 0.5])
    y = 1 + 2 * x[:, 0]
    y[3] = np.nan
    np.testing.assert_allclose(fit_polynomial(x, y, 1).predict(x[3:4]), [7.0])


def test_coherence_is_high_for_stripes_at_any_angle_and_low_for_isotropic_texture():
    size = 48
    striped = np.stack([stripes(size, a) for a in (0, 30, 90, 135)])
    noise = ndimage.gaussian_filter(np.random.default_rng(0).normal(size=(4, size, size)), (0, 1.5, 1.5))
    coherence = structure_tensor_coherence(np.concatenate([striped, noise, np.zeros((1, size, size))]), 1.0)
    assert (coherence[:4] > 0.9).all()
    assert (coherence[4:8] < 0.3).all()
    assert coherence[8] == 0.0
    assert np.ptp(coherence[:4]) < 0.05  # rotation does not change it


def _store(tmp_path, n=60, seed=0):
    """Patches mixing stripes (weight w) with noise; cc random; md a known quadratic of both features."""
    rng = np.random.default_rng(seed)
    size = 24
    w = rng.uniform(0, 1, n)
    noise = ndimage.gaussian_filter(rng.normal(size=(n, size, size)), (0, 1, 1))
    gray = w[:, None, None] * np.stack([stripes(size, a) for a in rng.uniform(0, 180, n)]) + (1 - w)[
        :, None, None
    ] * (0.5 + 0.2 * noise)
    images = np.repeat((np.clip(gray, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=-1)
    cc = rng.integers(0, 30, n).astype(float)
    rows, cols = np.divmod(np.arange(n), 10)
    table = pd.DataFrame({"row": rows, "col": cols, "cc": cc})
    splits = rng.choice(["train", "val", "test"], size=n, p=[0.6, 0.2, 0.2])

    def assign(index):
        index = index.copy()
        index["split_random"] = splits
        return index

    store = write_store(tmp_path / "patches", [SampleBlock("a", images, table)], {"um_per_px": 2.0}, assign)
    return store


def test_baseline_predictions_recover_a_relation_of_density_and_coherence(tmp_path):
    store = _store(tmp_path)
    area_mm2 = (24 * 2.0) ** 2 / 1e6
    feats = baseline_predictions(store, "random", ["cc"], degree=1, density_source="cc")
    np.testing.assert_allclose(feats["density"], store.index["cc"] / area_mm2)
    # Build md from the features the baseline sees, then check it is recovered.
    dens, coh = feats["density"].to_numpy(), feats["coherence"].to_numpy()
    md = 0.4 + 1e-4 * dens + 0.9 * coh - 0.5 * coh**2
    index = store.index.copy()
    index["md"] = md
    index.to_parquet(store.root / "index.parquet", index=False)
    from histoxai.data.store import PatchStore

    out = baseline_predictions(PatchStore(store.root), "random", ["md"], degree=2, density_source="cc")
    assert out.attrs["density_source"] == "cc"
    assert list(out["split"]) == list(index["split_random"])
    np.testing.assert_allclose(out["yhat_md"], md, atol=1e-8)
    np.testing.assert_allclose(out["y_md"], md)


def test_nuclei_counts_use_the_detector_when_available(tmp_path, monkeypatch):
    store = _store(tmp_path, n=12)
    ids = np.arange(12)
    seen = {}

    def fake(rgb, um_per_px=None):
        seen["um"] = um_per_px
        return 7

    monkeypatch.setattr(baseline, "_detector", lambda: fake)
    counts, source = nuclei_counts(store, ids, "auto")
    assert source == "detector" and (counts == 7).all() and seen["um"] == 2.0
    counts, source = nuclei_counts(store, ids, "cc")
    assert source == "cc" and np.array_equal(counts, store.index["cc"])

    monkeypatch.setattr(baseline, "_detector", lambda: None)
    assert nuclei_counts(store, ids, "auto")[1] == "cc"
    with pytest.raises(ValueError, match="count_nuclei is not available"):
        nuclei_counts(store, ids, "detector")


# --------------------------------------------------------------------------- MICROMEN per-voxel baseline


@pytest.fixture(scope="module")
def summary():
    from histoxai.evaluation.voxel_baseline import load_summary
    from tests.fixtures.micromen_fixture import summary_or_skip

    return load_summary(summary_or_skip())


def test_per_voxel_baseline_reproduces_micromen(summary):
    # Checked independently (issue 12 item 6): across tumours 0.595 (MD) and 0.812 (in-plane
    # FA), published 0.58 / 0.82; per-tumour out-of-sample medians ~0.045 and ~0.16 (the
    # random 80/20 splits move them by about ±0.007 across seeds); the article's CNNs 0.31 / 0.21.
    from histoxai.evaluation.voxel_baseline import per_voxel_baseline

    s = per_voxel_baseline(summary, seed=0).summary
    assert s["across_r2_md"] == pytest.approx(0.595, abs=0.002)
    assert s["across_r2_faip"] == pytest.approx(0.812, abs=0.002)
    assert s["per_tumour_median_r2_md"] == pytest.approx(0.045, abs=0.01)
    assert s["per_tumour_median_r2_faip"] == pytest.approx(0.16, abs=0.015)
    assert s["cnn_median_r2_md"] == pytest.approx(0.31, abs=0.005)
    assert s["cnn_median_r2_faip"] == pytest.approx(0.21, abs=0.005)


def test_per_voxel_baseline_catches_a_broken_feature(summary):
    # Known-bad controls: density shuffled within each tumour explains nothing per tumour;
    # unsmoothed maps change the across-tumour fit only a little, FA instead of in-plane FA less.
    import copy

    from histoxai.evaluation.voxel_baseline import per_voxel_baseline

    rng = np.random.default_rng(0)
    broken = copy.copy(summary)
    broken["sCD"] = np.array(
        [rng.permutation(m.ravel()).reshape(m.shape) for m in summary["sCD"]], dtype=object
    )
    s = per_voxel_baseline(broken, seed=0).summary
    assert s["per_tumour_median_r2_md"] < 0.01
    good = per_voxel_baseline(summary, seed=0).summary
    assert good["across_r2_fa"] < good["across_r2_faip"] - 0.05  # in-plane FA is the right target


def test_process_map_is_matlabs_smoothing():
    from histoxai.evaluation.voxel_baseline import gaussian_kernel, process_map

    k = gaussian_kernel(0.5)
    assert k.shape == (5, 5) and k.sum() == pytest.approx(1.0)
    roi = np.zeros((9, 9), dtype=np.uint8)
    roi[2:7, 2:7] = 1
    x = np.full((9, 9), np.nan)
    x[4, 4] = 1.0
    out = process_map(x, roi, 0.5)
    assert out[4, 4] == pytest.approx(k[2, 2]) and out[4, 5] == pytest.approx(k[2, 3])
    assert out[0, 0] == 0 and np.isfinite(out).all()  # NaN and outside-ROI voxels are 0


def test_baseline_cli_writes_report_and_tables(summary, tmp_path):
    from histoxai.cli import main
    from tests.fixtures.micromen_fixture import REPO, SUMMARY

    params = str(REPO / "params.yaml")
    rc = main(["baseline", "--params", params, "--summary", str(SUMMARY), "--out", str(tmp_path / "b"),
               "--repeats", "2"])  # fmt: skip
    assert rc == 0
    report = (tmp_path / "b" / "report.md").read_text()
    assert "0.595" in report and "0.812" in report
    table = pd.read_csv(tmp_path / "b" / "per_tumour.csv")
    assert len(table) == 16 and {"r2_md", "ev_md", "r2_faip", "cnn_r2_md"} <= set(table.columns)
    assert main(["baseline", "--params", params, "--summary", str(tmp_path / "none.mat")]) == 2
