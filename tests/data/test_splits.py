import numpy as np
import pandas as pd
import pytest

from histoxai.config import SplitConfig
from histoxai.data.splits import assign_splits


def grid_index(samples=("s1", "s2", "s3"), n=12) -> pd.DataFrame:
    rows, cols = np.divmod(np.arange(n * n), n)
    return pd.concat(
        [pd.DataFrame({"sample": s, "row": rows, "col": cols}) for s in samples], ignore_index=True
    )


def test_random_split_fractions_and_holdout():
    ix = assign_splits(grid_index(), SplitConfig(holdout_samples=("s3",)), seed=0)
    in_train = ix[ix["sample"] != "s3"]["split_random"].value_counts(normalize=True)
    assert in_train["train"] == pytest.approx(0.6, abs=0.01)
    assert in_train["val"] == pytest.approx(0.2, abs=0.01)
    assert (ix[ix["sample"] == "s3"]["split_random"] == "out").all()


def test_spatial_blocks_are_never_split():
    ix = assign_splits(grid_index(), SplitConfig(block_vox=4), seed=0)
    blocks = ix.assign(br=ix["row"] // 4, bc=ix["col"] // 4).groupby(["sample", "br", "bc"])
    assert (blocks["split_spatial_block"].nunique() == 1).all()
    assert set(ix["split_spatial_block"]) == {"train", "val", "test"}


def test_leave_sample_out_tests_on_the_other_samples():
    ix = assign_splits(grid_index(), SplitConfig(train_samples=("s1", "s2")), seed=0)
    lso = ix.groupby("sample")["split_leave_sample_out"].agg(set)
    assert lso["s3"] == {"test"}
    assert lso["s1"] == {"train", "val"} and lso["s2"] == {"train", "val"}


def test_splits_are_disjoint_and_deterministic():
    a = assign_splits(grid_index(), SplitConfig(), seed=3)
    b = assign_splits(grid_index(), SplitConfig(), seed=3)
    c = assign_splits(grid_index(), SplitConfig(), seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert not a["split_random"].equals(c["split_random"])
    for col in ("split_random", "split_spatial_block", "split_leave_sample_out"):
        assert a[col].isin(["train", "val", "test", "out"]).all()


def test_unknown_sample_and_bad_fractions_are_named():
    with pytest.raises(ValueError, match="'s9' is not in the data"):
        assign_splits(grid_index(), SplitConfig(train_samples=("s9",)), seed=0)
    with pytest.raises(ValueError, match="summing to 1"):
        assign_splits(grid_index(), SplitConfig(fractions=(0.5, 0.2, 0.2)), seed=0)
