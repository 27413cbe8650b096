"""Display-size thumbnails written beside maps larger than the dashboard shows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from histoxai.explain.store import META_COLUMNS, SaliencyStore
from histoxai.explain.thumbnails import THUMB_PX, shown, shrink


def store_with(tmp_path, maps: np.ndarray, chunk_size: int = 3) -> SaliencyStore:
    n = len(maps)
    meta = pd.DataFrame({c: np.zeros(n) for c in META_COLUMNS}).assign(
        patch_id=np.arange(n), sample="s1", split="test", target="md"
    )
    manifest = {
        "model_uri": "models:/m/1",
        "patch_ids": list(range(n)),
        "targets": ["md"],
        "variants": {"sg": {"method": "smoothgrad", "params": {}}},
        "patch_size_px": maps.shape[1],
    }
    store = SaliencyStore.create(tmp_path / "sal", manifest, meta, chunk_size=chunk_size)
    store.write_maps("md", "sg", maps)
    return store


@pytest.mark.parametrize("size", [240, 360])
def test_thumbnail_planes_give_every_sign_of_the_reduced_map(tmp_path, size):
    rng = np.random.default_rng(0)
    maps = (rng.normal(size=(7, size, size)) * rng.uniform(1e-6, 10.0, (7, 1, 1))).astype(np.float32)
    store = store_with(tmp_path, maps)
    rows = [5, 0, 6]
    planes = store.read_thumbnails("md", "sg", rows)
    f = -(-size // THUMB_PX)
    assert planes.shape == (3, 2, size // f, size // f) and planes.dtype == np.float32
    real = store.read("md", "sg", rows)  # the stored maps, in real units
    expected = {
        "abs": np.abs(real),
        "signed": real,
        "pos": np.maximum(real, 0.0),
        "neg": np.maximum(-real, 0.0),
    }
    for sign, values in expected.items():
        for planes_i, v in zip(planes, values):
            want = shrink(v)
            tol = 2e-3 * np.abs(v).max()  # float16 thumbnails: 11 significant bits of the map's peak
            np.testing.assert_allclose(shown(planes_i, sign), want, atol=tol, err_msg=sign)
    with pytest.raises(KeyError, match="sign"):
        shown(planes[0], "both")


def test_maps_no_larger_than_shown_get_no_thumbnails(tmp_path):
    store = store_with(tmp_path, np.ones((4, THUMB_PX, THUMB_PX), np.float32))
    assert store.read_thumbnails("md", "sg", [0]) is None
    assert not (store.root / "maps" / "md__sg.thumb.npy").exists()
