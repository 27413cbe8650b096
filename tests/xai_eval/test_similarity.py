import numpy as np
import pytest
import torch
from scipy.stats import rankdata, spearmanr
from skimage.metrics import structural_similarity

from histoxai.xai_eval.similarity import average_ranks, minmax, rank_correlation, ssim


def test_average_ranks_match_scipy_with_ties():
    x = torch.tensor([[3.0, 1.0, 3.0, 2.0, 1.0], [0.0, 0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    expected = np.stack([rankdata(row, method="average") for row in x.numpy()])
    np.testing.assert_array_equal(average_ranks(x).numpy(), expected)


def test_rank_correlation_matches_scipy_spearman():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 8, 8, generator=g)
    b = a + 0.5 * torch.rand(3, 8, 8, generator=g)
    b[0] = b[0].round(decimals=1)  # ties
    got = rank_correlation(a, b).numpy()
    expected = [spearmanr(a[i].flatten(), b[i].flatten()).statistic for i in range(3)]
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_rank_correlation_of_flat_maps_is_one_between_flat_maps_else_zero():
    ones = torch.ones(2, 4, 4)
    other = torch.rand(2, 4, 4)
    assert rank_correlation(ones, ones).tolist() == [1.0, 1.0]
    assert rank_correlation(ones, 3 * ones).tolist() == [1.0, 1.0]  # still flat: nothing changed
    assert rank_correlation(ones, other).tolist() == [0.0, 0.0]


def test_ssim_matches_skimage_on_min_max_scaled_maps():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(2, 16, 20, generator=g)
    b = a + torch.randn(2, 16, 20, generator=g)
    got = ssim(a, b).numpy()
    sa, sb = minmax(a).numpy(), minmax(b).numpy()
    expected = [structural_similarity(sa[i], sb[i], data_range=1.0) for i in range(2)]
    np.testing.assert_allclose(got, expected, atol=1e-10)
    assert ssim(a, a).tolist() == pytest.approx([1.0, 1.0])


def test_ssim_rejects_maps_smaller_than_its_window():
    with pytest.raises(ValueError, match="smaller than the SSIM window"):
        ssim(torch.rand(1, 5, 5), torch.rand(1, 5, 5))


def test_non_finite_maps_are_refused():
    a = torch.rand(1, 8, 8)
    a[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        rank_correlation(a, a)
