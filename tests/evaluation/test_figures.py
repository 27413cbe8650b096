"""The thesis' figures and tables: R² both ways, Table 4.1, grids, Brabec's per-sample protocol."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from histoxai.evaluation.figures import (
    per_sample_protocol,
    r2_both,
    sample_split_view,
    select_patches,
    table_4_1,
    write_thesis_outputs,
)
from histoxai.explain.store import SaliencyStore
from tests.training.conftest import phantom_store, tiny_config


def test_r2_both_definitions():
    rng = np.random.default_rng(0)
    y = rng.normal(size=500)
    y_hat = y + rng.normal(scale=0.5, size=500)
    m = r2_both(y, y_hat)
    assert m["r2"] == pytest.approx(m["ev"], abs=0.01)  # unbiased: the two agree
    biased = r2_both(y, y_hat + 1.0)  # a constant offset, as out-of-sample predictions have
    assert biased["ev"] == pytest.approx(m["ev"], abs=1e-9)  # ev ignores it
    assert biased["r2"] < m["r2"] - 0.5  # r2 does not
    assert np.isnan(r2_both([1.0], [1.0])["r2"]) and r2_both([1.0, np.nan], [1.0, 2.0])["n"] == 1


def test_table_4_1_groups_in_and_out_samples():
    rng = np.random.default_rng(1)
    rows = []
    for sample, splits in (("s3", ["train", "val", "test"]), ("s1", ["out"])):
        for i in range(60):
            y = rng.normal()
            rows.append({"patch_id": len(rows), "sample": sample, "row": i, "col": 0,
                         "split": splits[i % len(splits)], "y_md": y,
                         "yhat_md": y + (0.0 if sample == "s3" else 2.0) + 0.1 * rng.normal()})  # fmt: skip
    pred = pd.DataFrame(rows)
    published = pd.DataFrame({"brabec_cnn/r2_md": [0.42, 0.46]}, index=["s1", "s3"])
    table = table_4_1(pred, ["md"], published)
    assert table.loc["s3", "n_in"] == 60 and table.loc["s3", "n_out"] == 0
    assert table.loc["s1", "n_out"] == 60 and np.isnan(table.loc["s1", "in/r2_md"])
    assert table.loc["s3", "in/r2_md"] > 0.95 and table.loc["s3", "test/r2_md"] > 0.95
    assert np.isnan(table.loc["s1", "test/r2_md"])  # no in-sample test patches
    assert table.loc["s1", "out/ev_md"] > 0.95 and table.loc["s1", "out/r2_md"] < 0  # offset out of sample
    assert table.loc["s1", "brabec_cnn/r2_md"] == 0.42


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return phantom_store(tmp_path_factory.mktemp("fig") / "patches", n_samples=2, grid=6, size=32)


@pytest.fixture(scope="module")
def saliency(store, tmp_path_factory):
    """A saliency store with two variants' maps for md on every patch (random maps)."""
    root = tmp_path_factory.mktemp("sal") / "s"
    ids = store.index["patch_id"].to_numpy()
    meta = pd.concat(
        [
            pd.DataFrame({"patch_id": ids, "sample": store.index["sample"], "row": store.index["row"],
                          "col": store.index["col"], "split": store.index["split_random"], "target": t,
                          "y": store.index[t], "y_hat": store.index[t] + 0.1, "delta": 0.1, "rel_delta": 1.0})
            for t in ("md", "fa")
        ]
    )  # fmt: skip
    variants = {
        "gradcampp": {"method": "gradcampp", "params": {}},
        "sg": {"method": "smoothgrad", "params": {}},
    }
    manifest = {"model_uri": "m", "model_version": "1", "patch_ids": ids.tolist(), "targets": ["md", "fa"],
                "variants": variants, "score": "higher"}  # fmt: skip
    sal = SaliencyStore.create(root, manifest, meta)
    rng = np.random.default_rng(0)
    for t in ("md", "fa"):
        for v in variants:
            sal.write_maps(t, v, rng.normal(size=(len(ids), 32, 32)).astype(np.float16))
    return SaliencyStore(root)


def test_select_patches_is_seeded_and_stays_in_its_split(saliency):
    a = select_patches(saliency, 5, "test", seed=0)
    assert len(a) == 5 and np.array_equal(a, select_patches(saliency, 5, "test", seed=0))
    assert not np.array_equal(a, select_patches(saliency, 5, "test", seed=1))
    splits = saliency.meta.drop_duplicates("patch_id").set_index("patch_id").loc[a, "split"]
    assert set(splits) == {"test"}
    with pytest.raises(ValueError, match="no patches of split 'out'"):
        select_patches(saliency, 5, "out", seed=0)


def test_figures_writes_grids_as_png_and_pdf(store, saliency, tmp_path):
    cfg = tiny_config(store, tmp_path, "figures.n_patches=4", "figures.methods=[gradcampp, sg]")
    written = write_thesis_outputs(cfg, tmp_path / "out", saliency_dir=saliency.root)
    names = sorted(p.name for p in written)
    assert names == ["grid_fa.pdf", "grid_fa.png", "grid_md.pdf", "grid_md.png"]
    from PIL import Image

    with Image.open(tmp_path / "out" / "grid_md.png") as im:
        w, h = im.size
    assert h > w  # 4 patch rows x 3 columns (H&E + 2 methods)
    assert (tmp_path / "out" / "grid_md.pdf").read_bytes()[:4] == b"%PDF"
    bad = tiny_config(store, tmp_path, "figures.methods=[nope]")
    with pytest.raises(ValueError, match=r"figures.methods: \['nope'\]"):
        write_thesis_outputs(bad, tmp_path / "bad", saliency_dir=saliency.root)
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())


def test_brabec_split_view_splits_only_its_sample(store, tmp_path):
    cfg = tiny_config(store, tmp_path)
    view = sample_split_view(store, "s2", cfg)
    by = view.index.groupby("sample")["split_random"].agg(set)
    assert by["s2"] == {"train", "val", "test"} and by["s1"] == {"out"}
    assert "split_random" in store.index and store.index is not view.index  # the store is untouched
    assert set(store.index.groupby("sample")["split_random"].agg(set)["s1"]) != {"out"}


@pytest.mark.slow
def test_per_sample_protocol_trains_one_model_per_sample(store, tmp_path):
    cfg = tiny_config(store, tmp_path, "train.epochs=1", "train.batch_size=8", "model.targets=[md]")
    seen = []

    def spy(c, view):
        from histoxai.training.session import train_regressor

        seen.append(set(view.index.loc[view.index["split_random"] == "train", "sample"]))
        return train_regressor(c, view, progress=False)

    table = per_sample_protocol(cfg, store, train_fn=spy)
    assert list(table.index) == ["s1", "s2"] and seen == [{"s1"}, {"s2"}]
    assert (table["n_test"] > 0).all()
    assert np.isfinite(table[["per_sample/r2_md", "per_sample/ev_md"]].to_numpy()).all()
