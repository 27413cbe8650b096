import numpy as np
import pytest
import torch

from histoxai.data.datasets import PatchBatches, PatchDataset, to_model_input


@pytest.mark.parametrize("workers, ram", [(0, 2 << 30), (1, 2 << 30), (1, 0)])
def test_batches_cover_the_ids_once_with_matching_targets(tiny_store, workers, ram):
    ids = tiny_store.ids()[::2]
    loader = PatchBatches(
        tiny_store, ids, ("md", "cc"), 5, shuffle=True, seed=1, workers=workers, max_ram_bytes=ram
    )
    seen = []
    for images, y, batch_ids in loader:
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, 16, 16)
        assert images.is_contiguous(memory_format=torch.channels_last)
        ref = torch.from_numpy(tiny_store.images(batch_ids.numpy())).permute(0, 3, 1, 2)
        assert torch.equal(images, ref)
        expected = tiny_store.index.loc[batch_ids.numpy(), ["md", "cc"]].to_numpy(np.float32)
        assert np.array_equal(y.numpy(), expected)
        seen += batch_ids.tolist()
    assert sorted(seen) == sorted(ids.tolist()) and len(loader) == 4


def test_shuffle_order_is_seeded_per_epoch_and_drop_last(tiny_store):
    ids = tiny_store.ids()
    loader = PatchBatches(tiny_store, ids, ("md",), 10, shuffle=True, seed=3, drop_last=True)
    first = [b[2].tolist() for b in loader]
    assert len(first) == len(ids) // 10 and all(len(b) == 10 for b in first)
    assert first == [b[2].tolist() for b in loader]  # same epoch, same order
    loader.set_epoch(1)
    assert first != [b[2].tolist() for b in loader]
    plain = PatchBatches(tiny_store, ids, ("md",), 10)
    assert np.concatenate([b[2].numpy() for b in plain]).tolist() == ids.tolist()


@pytest.mark.parametrize("ram", [2 << 30, 0])
def test_ranks_share_each_epoch_shuffled_padded_or_ordered_once(tiny_store, ram):
    ids = tiny_store.ids()[:23]

    def loaders(world, **kw):
        return [PatchBatches(tiny_store, ids, ("md",), 4, max_ram_bytes=ram, rank=r, world=world, **kw) for r in range(world)]  # fmt: skip

    def served(loader):
        return sorted(np.concatenate([b[2].numpy() for b in loader]).tolist())

    # training: one process's (seed, epoch) order, wrapped to 24 and dealt out round robin,
    # so every rank runs the same number of steps
    ranks, (one,) = loaders(3, shuffle=True, seed=2), loaders(1, shuffle=True, seed=2)
    for epoch in (0, 1):
        for loader in (*ranks, one):
            loader.set_epoch(epoch)
        dealt = np.resize(one.order(), 24)
        for r, loader in enumerate(ranks):
            assert np.array_equal(loader.order(), dealt[r::3]) and len(loader) == 2
            assert served(loader) == sorted(ids[dealt[r::3]].tolist())
    # evaluation: each id exactly once over the ranks
    shares = [served(loader) for loader in loaders(3)]
    assert [len(s) for s in shares] == [8, 8, 7] and sorted(sum(shares, [])) == ids.tolist()
    with pytest.raises(ValueError, match="rank 2 of world 2"):
        PatchBatches(tiny_store, ids, ("md",), 4, rank=2, world=2)


def test_model_input_is_float_unit_range(tiny_store):
    images, _, _ = next(iter(PatchBatches(tiny_store, tiny_store.ids(), ("md",), 4)))
    x = to_model_input(images)
    assert x.dtype == torch.float32 and x.max() <= 1 and torch.allclose(x * 255, images.float())


def test_dataset_works_with_the_torch_dataloader(tiny_store):
    ds = PatchDataset(tiny_store, tiny_store.ids()[:7], ("md",))
    x, y = ds[2]
    assert x.shape == (3, 16, 16) and y.shape == (1,)
    batches = list(torch.utils.data.DataLoader(ds, batch_size=4))
    assert [b[0].shape[0] for b in batches] == [4, 3]
    assert torch.equal(batches[0][0][2], x) and torch.equal(batches[0][1][2], y)


def test_unknown_target_column_is_named(tiny_store):
    tiny_store.index = tiny_store.index.drop(columns=["fa"])
    with pytest.raises(ValueError, match=r"no target columns \['fa'\]"):
        PatchBatches(tiny_store, tiny_store.ids(), ("fa",), 4)
