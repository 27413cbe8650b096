import numpy as np
import pytest

from histoxai.config import SplitConfig
from histoxai.data.splits import assign_splits
from histoxai.data.store import PatchStore, write_store
from tests.conftest import make_blocks


def test_round_trip_is_exact(tmp_path):
    blocks = make_blocks(n_samples=3, grid=3, size=8)
    store = write_store(tmp_path / "s", blocks, {"source": "test"})
    reopened = PatchStore(tmp_path / "s")
    assert len(reopened) == 27 and reopened.samples == ["s1", "s2", "s3"]
    ids = np.array([26, 0, 13, 9])
    expected = np.concatenate([b.images for b in blocks])[ids]
    np.testing.assert_array_equal(reopened.images(ids), expected)
    np.testing.assert_array_equal(reopened.masks(ids), np.concatenate([b.masks for b in blocks])[ids])
    assert reopened.card["patch_size_px"] == 8 and reopened.card["targets"] == ["md", "cc"]
    assert np.isnan(reopened.index["fa"]).all()
    nuclei = reopened.table("nuclei")
    assert nuclei["patch_id"].tolist() == [0, 8, 9, 17, 18, 26]
    assert store.index["row"].dtype == np.int32


def test_reading_is_memory_mapped(tiny_store):
    tiny_store.images([0])
    assert isinstance(tiny_store._images["s1"], np.memmap)


def resident_kib(path) -> int:
    """Resident KiB of this process's mappings of ``path`` (from /proc/self/smaps)."""
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        if "-" in line.split(" ", 1)[0]:  # a mapping's header line
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/smaps"), reason="needs Linux /proc")
def test_reading_every_patch_keeps_none_resident(tmp_path):
    # Rows are read with pread: the process's resident set does not grow with the
    # patches read (the explain benchmark's peak RSS stays flat in N).
    blocks = make_blocks(n_samples=2, grid=8, size=64)
    write_store(tmp_path / "s", blocks, {"source": "test"})
    store = PatchStore(tmp_path / "s")
    ids = np.random.default_rng(0).permutation(len(store))
    expected = np.concatenate([b.images for b in blocks])[ids]
    np.testing.assert_array_equal(store.images(ids), expected)
    np.testing.assert_array_equal(store.masks(ids[:5]), np.concatenate([b.masks for b in blocks])[ids[:5]])
    path = tmp_path / "s" / "patches" / "s1.npy"
    assert path.stat().st_size > 700_000 and resident_kib(path.resolve()) <= 8


def test_failed_write_keeps_the_previous_store(tmp_path):
    write_store(tmp_path / "s", make_blocks(), {"source": "v1"})

    def broken():
        yield from make_blocks()[:1]
        raise RuntimeError("source died half-way")

    with pytest.raises(RuntimeError):
        write_store(tmp_path / "s", broken(), {"source": "v2"})
    store = PatchStore(tmp_path / "s")
    assert store.card["source"] == "v1" and len(store) == 32
    assert [p.name for p in tmp_path.iterdir()] == ["s"], "no temporary left behind"


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: setattr(b, "images", b.images[:-1]), "images but"),
        (lambda b: setattr(b, "images", b.images.astype(np.float32)), "uint8"),
        (lambda b: setattr(b, "masks", b.masks[:, :4]), "masks"),
        (lambda b: setattr(b, "table", b.table.drop(columns="row")), "lacks columns"),
        (lambda b: setattr(b, "sample", "bad/name"), "letters, digits"),
    ],
)
def test_bad_blocks_are_rejected_with_the_sample_named(tmp_path, mutate, message):
    blocks = make_blocks()
    mutate(blocks[1])
    with pytest.raises(ValueError, match=message):
        write_store(tmp_path / "s", blocks, {})
    assert not (tmp_path / "s").exists()


def test_missing_store_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="histoxai prepare"):
        PatchStore(tmp_path / "nowhere")


def test_ids_by_split_and_sample(tmp_path):
    cfg = SplitConfig(holdout_samples=("s2",))
    store = write_store(tmp_path / "s", make_blocks(), {}, lambda ix: assign_splits(ix, cfg, seed=1))
    test_ids = store.ids("test", scheme="random")
    assert set(store.index.loc[test_ids, "sample"]) == {"s1"}
    assert set(store.ids("out")) == set(store.ids(samples=["s2"]))
    with pytest.raises(ValueError, match="unknown split"):
        store.ids("holdout")


def test_stores_without_instances_say_so_and_instances_round_trip(tmp_path):
    blocks = make_blocks(size=8)
    plain = write_store(tmp_path / "plain", blocks, {})
    assert not plain.has_instances
    with pytest.raises(FileNotFoundError, match="no instance masks"):
        plain.instances([0])
    for k, block in enumerate(blocks):
        block.instances = np.full(block.masks.shape, k + 1, dtype=np.int32)
    store = write_store(tmp_path / "with", blocks, {})
    assert store.has_instances
    np.testing.assert_array_equal(
        store.instances([0, 31]), np.stack([blocks[0].instances[0], blocks[1].instances[-1]])
    )
    blocks[1].instances = None
    with pytest.raises(ValueError, match="instances must be given for all samples or none"):
        write_store(tmp_path / "mixed", blocks, {})
