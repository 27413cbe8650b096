"""Torch access to a :class:`~histoxai.data.store.PatchStore`, a whole batch at a time.

:class:`PatchBatches` is the training loader: it gathers each batch with one fancy index
into the memory-mapped store (or into a RAM copy of the split when it fits
``max_ram_bytes``) instead of ``__getitem__`` per patch plus collate, and can gather the
next batch in a background thread while the model runs. Batches are uint8
(B, 3, H, W) tensors in channels-last memory layout (a free view of the store's
(B, H, W, 3) arrays); :func:`to_model_input` makes them float [0, 1] on a device.

:class:`PatchDataset` is the plain map-style dataset for ``torch.utils.data.DataLoader``
users; it also implements ``__getitems__`` so the DataLoader fetches batches at once.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from histoxai.data.store import PatchStore


def target_matrix(store: PatchStore, ids: np.ndarray, targets: Sequence[str]) -> np.ndarray:
    """(N, T) float32 target values of ``ids`` (NaN where missing)."""
    missing = [t for t in targets if t not in store.index.columns]
    if missing:
        raise ValueError(f"store {store.root} has no target columns {missing}")
    return store.index[list(targets)].to_numpy(np.float32)[np.asarray(ids, dtype=np.int64)]


def to_model_input(
    images: torch.Tensor, device: torch.device | str = "cpu", channels_last: bool = True
) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 RGB in [0, 1] on ``device``."""
    x = images.to(device, non_blocking=True).float().div_(255)
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


class PatchBatches:
    """Iterable of ``(images, targets, ids)`` batches over patch ``ids`` of a store.

    Args:
        store: the patch store.
        ids: patch ids to serve.
        targets: target columns, e.g. ``("md", "fa")``; ``targets`` batches are (B, T).
        batch_size: patches per batch.
        shuffle: reshuffle each epoch (seeded by ``seed`` and :meth:`set_epoch`).
        seed: shuffle seed.
        drop_last: skip a final short batch (training with batch norm).
        workers: background threads gathering batches ahead (0: gather inline).
        max_ram_bytes: copy the split's patches into RAM once if they fit.
        rank, world: serve only share ``rank`` of ``world`` of every epoch (data-parallel
            training; see :func:`rank_share`): a shuffled loader's shares are padded so
            every rank runs the same number of steps, an ordered one's hold each id once.
        pin: gather batches into page-locked memory (CUDA only: the host-to-device copy
            of :func:`to_model_input` then runs asynchronously).

    Example:
        >>> loader = PatchBatches(store, store.ids("train"), ("md", "fa"), 64, shuffle=True)
        >>> for images, y, ids in loader:  # (B, 3, H, W) uint8, (B, 2) float32, (B,) int64
        ...     ...
    """

    def __init__(
        self,
        store: PatchStore,
        ids: np.ndarray,
        targets: Sequence[str],
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        workers: int = 0,
        max_ram_bytes: int = 2 << 30,
        rank: int = 0,
        world: int = 1,
        pin: bool = False,
    ):
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} of world {world}: expected 0 <= rank < world")
        self.store, self.targets = store, tuple(targets)
        self.ids = np.asarray(ids, dtype=np.int64)
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.workers, self.epoch, self.rank, self.world, self.pin = workers, 0, rank, world, pin
        self.y = target_matrix(store, self.ids, self.targets)
        nbytes = len(self.ids) * store.patch_size**2 * 3
        self._ram = store.images(self.ids) if nbytes <= max_ram_bytes else None

    def __len__(self) -> int:
        n = len(rank_share(np.arange(len(self.ids)), self.rank, self.world, pad=self.shuffle))
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle order of ``epoch`` (same seed and epoch: same order)."""
        self.epoch = epoch

    def order(self) -> np.ndarray:
        """Positions (into ``ids``) in this epoch's order (this rank's share of them)."""
        pos = np.arange(len(self.ids))
        if self.shuffle:
            pos = np.random.default_rng([self.seed, self.epoch]).permutation(pos)
        return rank_share(pos, self.rank, self.world, pad=self.shuffle)

    def batch(self, pos: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Gather the batch at positions ``pos`` (into ``ids``)."""
        if self._ram is None:
            pos = np.sort(pos)  # sorted reads are sequential in the memory-mapped files
        x = self._images(pos).permute(0, 3, 1, 2)  # (B, 3, H, W) view, channels-last
        y = torch.from_numpy(self.y[pos])
        return x, y.pin_memory() if self.pin else y, torch.from_numpy(self.ids[pos])

    def _images(self, pos: np.ndarray) -> torch.Tensor:
        """(B, H, W, 3) uint8 of positions ``pos``, gathered straight into pinned memory if ``pin``."""
        if self._ram is None:
            images = torch.from_numpy(self.store.images(self.ids[pos]))
            return images.pin_memory() if self.pin else images
        if not self.pin:
            return torch.from_numpy(self._ram[pos])
        out = torch.empty((len(pos), *self._ram.shape[1:]), dtype=torch.uint8, pin_memory=True)
        np.take(self._ram, pos, axis=0, out=out.numpy())
        return out

    def _chunks(self) -> list[np.ndarray]:
        order = self.order()
        return [
            order[i : i + self.batch_size] for i in range(0, len(self) * self.batch_size, self.batch_size)
        ]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        chunks = self._chunks()
        if self.workers <= 0:
            for pos in chunks:
                yield self.batch(pos)
            return
        yield from _prefetch(self.batch, chunks, depth=self.workers + 1)


def rank_share(order: np.ndarray, rank: int, world: int, pad: bool) -> np.ndarray:
    """Rank ``rank``'s share of ``order`` among ``world`` ranks: every ``world``-th item from
    ``rank``. With ``pad`` the order is first wrapped round to a multiple of ``world`` (as
    ``torch.utils.data.DistributedSampler``), so every rank gets the same number of items
    (training: every rank must run the same steps); without it each item is served once
    (evaluation: sums over ranks equal sums over ``order``)."""
    if world == 1:
        return order
    total = -(-len(order) // world) * world
    if pad and total > len(order):
        order = np.concatenate([order, np.resize(order, total - len(order))])
    return order[rank::world]


def _prefetch(fn, items: list, depth: int) -> Iterator:
    """``fn(item)`` for each item, computed one step ahead in a background thread."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                q.put(("ok", fn(item)))
        except BaseException as err:  # handed to the consumer
            q.put(("error", err))
        q.put(("done", None))

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.01)


class PatchDataset(torch.utils.data.Dataset):
    """Map-style dataset: item ``i`` is ``(image, targets)`` of patch ``ids[i]``, with the
    image float (3, H, W) RGB in [0, 1] and targets (T,) float32."""

    def __init__(self, store: PatchStore, ids: np.ndarray, targets: Sequence[str]):
        self.store, self.ids, self.targets = store, np.asarray(ids, dtype=np.int64), tuple(targets)
        self.y = torch.from_numpy(target_matrix(store, self.ids, self.targets))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        # one gather for the whole batch; the DataLoader's default collate stacks the items
        images = torch.from_numpy(self.store.images(self.ids[indices])).permute(0, 3, 1, 2).float().div_(255)
        y = self.y[indices]
        return [(images[k], y[k]) for k in range(len(indices))]
