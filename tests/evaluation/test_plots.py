import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from histoxai.evaluation.plots import plot_sample_maps, plot_scatter, sample_maps, voxel_grid
from tests.evaluation.helpers import frame


def test_voxel_grid_puts_each_value_at_its_row_and_col():
    grid = voxel_grid([0, 2, 1], [3, 0, 1], [1.0, 2.0, 3.0])
    assert grid.shape == (3, 4)
    assert grid[0, 3] == 1.0 and grid[2, 0] == 2.0 and grid[1, 1] == 3.0
    assert np.isnan(grid).sum() == 12 - 3


def test_sample_maps_draw_the_residual_at_the_patch_voxel():
    rows, cols = np.array([0, 1, 2, 4]), np.array([0, 3, 1, 2])
    y = np.array([1.0, 1.0, 1.0, 1.0])
    yhat = np.array([1.0, 1.0, 1.5, 1.0])  # residual 0.5 at (2, 1)
    pred = pd.concat(
        [frame("test", "a", y, yhat, rows, cols), frame("test", "b", [9.0], [0.0], [2], [1])],
        ignore_index=True,
    )
    maps = sample_maps(pred, "a", ["md"])["md"]
    assert maps["residual"].shape == (5, 4)
    assert maps["residual"][2, 1] == pytest.approx(0.5)
    assert np.nansum(np.abs(maps["residual"])) == pytest.approx(0.5)  # sample b is not drawn into a
    assert maps["predicted"][2, 1] == 1.5 and maps["measured"][4, 2] == 1.0
    assert np.isnan(maps["measured"][0, 1])  # no patch there
    with pytest.raises(ValueError, match="sample 'c'"):
        sample_maps(pred, "c", ["md"])


def test_plots_write_readable_pngs(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.uniform(0.2, 2.0, 40)
    rows, cols = np.divmod(np.arange(40), 8)
    pred = frame(
        ["train"] * 20 + ["test"] * 10 + ["out"] * 10, ["a"] * 30 + ["b"] * 10, y, y + 0.1, rows, cols
    )
    scatter = plot_scatter({"CNN": pred, "baseline": pred}, "md", tmp_path / "scatter.png", max_points=5)
    maps = plot_sample_maps(pred, "a", ["md"], tmp_path / "maps.png")
    for path in (scatter, maps):
        image = mpimg.imread(path)
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 400
