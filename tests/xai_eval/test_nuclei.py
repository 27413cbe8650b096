import numpy as np
import pytest
import torch

from histoxai.xai_eval.nuclei import binned, nucleus_table, property_summary
from tests.xai_eval.helpers import blob_truth


def test_ratio_is_relevance_share_over_pixel_share_per_counted_nucleus():
    truth = blob_truth(n=4)
    uniform = nucleus_table(torch.ones(truth.signed.shape), truth, "flat")
    assert len(uniform) == 8 and uniform["ratio"].to_numpy() == pytest.approx(1.0)
    on_elongated = torch.from_numpy((truth.instances == 2).astype(np.float32))
    t = nucleus_table(on_elongated, truth, "elong")
    assert (t.loc[t["nucleus"] == 2, "ratio"] > 1).all() and (t.loc[t["nucleus"] == 1, "ratio"] == 0).all()
    summary = property_summary(t).set_index("method")
    assert summary.loc["elong", "rho_elongation"] == pytest.approx(1.0)
    assert summary.loc["elong", "ratio_border"] > summary.loc["elong", "ratio_centre"]
    assert set(binned(t, "elongation")["method"]) == {"elong"}
