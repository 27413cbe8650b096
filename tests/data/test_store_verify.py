"""A patch store verifies itself on open: every damaged file is named, before any work."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from histoxai.data.store import PatchStore, write_store
from tests.conftest import make_blocks


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage(path):
    path.write_bytes(b"not a numpy file at all" * 10)


def _shift_offset(root):
    index = pd.read_parquet(root / "index.parquet")
    index.loc[index.index[-1], "offset"] = 10_000
    index.to_parquet(root / "index.parquet", index=False)


def _card_size(root):
    text = (root / "card.json").read_text()
    (root / "card.json").write_text(re.sub(r'"patch_size_px": \d+', '"patch_size_px": 32', text))


DAMAGES = {
    "truncated patches": (lambda r: _truncate(r / "patches" / "s2.npy"), "patches/s2.npy is damaged"),
    "garbage patches": (lambda r: _garbage(r / "patches" / "s1.npy"), "patches/s1.npy is damaged"),
    "truncated masks": (lambda r: _truncate(r / "masks" / "s1.npy"), "masks/s1.npy is damaged"),
    "missing patches": (lambda r: (r / "patches" / "s2.npy").unlink(), "patches/s2.npy is missing"),
    "broken card": (lambda r: (r / "card.json").write_text("{not json"), "card.json is not valid JSON"),
    "missing card": (lambda r: (r / "card.json").unlink(), "card.json is missing"),
    "card without size": (
        lambda r: (r / "card.json").write_text('{"targets": []}'),
        "card.json: patch_size_px=None",
    ),
    "card with another size": (_card_size, r"patches/s1.npy: expected \(n, 32, 32, 3\) uint8"),
    "garbage index": (lambda r: _garbage(r / "index.parquet"), "index.parquet is not a readable Parquet"),
    "offset past its array": (
        _shift_offset,
        "index.parquet: offset 10000 of sample s2 is past the 16 patches",
    ),
    "wrong mask shape": (
        lambda r: np.save(r / "masks" / "s1.npy", np.zeros((16, 8, 8), np.uint8)),
        r"masks/s1.npy: expected \(n, 16, 16\) uint8",
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damaged_store_is_refused_on_open_naming_the_file(tmp_path, damage):
    root = write_store(tmp_path / "patches", make_blocks(), {"source": "test"}).root
    PatchStore(root)  # intact: opens
    harm, message = DAMAGES[damage]
    harm(root)
    with pytest.raises(ValueError, match=message) as err:
        PatchStore(root)
    assert str(root) in str(err.value)  # the full path, not just a file name


def test_verified_store_reads_the_same_patches(tmp_path):
    blocks = make_blocks()
    store = write_store(tmp_path / "patches", blocks, {"source": "test"})
    np.testing.assert_array_equal(store.images(np.arange(16, 20)), blocks[1].images[:4])
    np.testing.assert_array_equal(store.masks([0, 31]), np.stack([blocks[0].masks[0], blocks[1].masks[15]]))
