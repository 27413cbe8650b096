"""Several processes on one job: the process group of a ``torchrun`` launch.

``torchrun --nproc-per-node N -m histoxai.cli <command>`` starts N processes with
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set; the
stage reads them (:func:`group_from_env`) and hands the :class:`Group` to library code,
which never reads the environment. One process (no ``WORLD_SIZE``) is a group of one,
and every collective below is then a no-op.

Why torchrun rather than Ray, tried both (``benchmarks/try_ray_explain.py``, 2 CPU workers,
loaded 2-core machine): the maps are byte-identical either way (Ray tasks still need a gloo
group for the barrier and broadcast), but Ray is a 260 MB install that starts 7 daemons
(0.5 GiB RSS) and costs 30-39 s of setup per run (``ray.init`` 7-12 s) against torchrun's
18-24 s. torchrun ships with torch, gives each process its GPU by ``LOCAL_RANK`` and spans
machines with ``--nnodes/--rdzv-endpoint``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Group:
    """This process's place in the job: ``rank`` of ``world`` (``local_rank`` on its machine)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def device(self, device: torch.device) -> torch.device:
        """This rank's GPU when ``device`` is CUDA (``cuda:<local_rank>``), else ``device``."""
        if device.type == "cuda" and self.world > 1:
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return device


def group_from_env(env: Mapping[str, str], backend: str = "gloo") -> Group:
    """The process group described by torchrun's variables in ``env`` (a group of one when
    ``WORLD_SIZE`` is unset or 1); joins it with ``backend`` (``gloo``: CPU collectives,
    ``nccl``: GPU ones)."""
    world = int(env.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Group()
    rank, local_rank = int(env["RANK"]), int(env.get("LOCAL_RANK", env["RANK"]))
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world)
    return Group(rank, world, local_rank)


def shard(n: int, group: Group) -> range:
    """The contiguous share ``[rank·n/world, (rank+1)·n/world)`` of ``n`` items."""
    return range(group.rank * n // group.world, (group.rank + 1) * n // group.world)


# --------------------------------------------------------------------------- data-parallel training
# What the fit loop (histoxai.training.fit) does on several processes (DDP through torchrun):
#   ddp    = wrap_model(model, group)          gradients averaged across ranks in backward
#   ids    = shard_ids(train_ids, group, seed)  each rank its equal share of the epoch
#   sync_buffers(model, group)                 batch-norm statistics: rank 0's on every rank
#   sums   = all_reduce_sum(sums, group)       validation sums (squared errors, counts,
#                                              moments) added over ranks before metrics
#   stop   = agree(stop, group)                early stopping: every rank stops together
# MLflow logging and checkpoints stay on ``group.is_main``; losses are accumulated as
# tensors and read once per epoch (no host sync per step).


def backend_for(device: torch.device) -> str:
    """The collective backend for training on ``device``: ``nccl`` on CUDA, else ``gloo``."""
    return "nccl" if device.type == "cuda" else "gloo"


def wrap_model(model: torch.nn.Module, group: Group) -> torch.nn.Module:
    """``model`` in DistributedDataParallel when ``group`` has several ranks (else as is).
    Parameters stay shared with ``model``, so checkpoints save ``model`` itself. DDP
    averages the gradients of the parameters that require them when it is built: wrap
    again after freezing or unfreezing some."""
    if group.world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device = next(model.parameters()).device
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def shard_ids(ids, group: Group, seed: int = 0, epoch: int = 0):
    """This rank's share of ``ids`` for one epoch: shuffled with (seed, epoch) the same way on
    every rank, padded by wrapping so every rank runs the same number of steps (as
    ``torch.utils.data.DistributedSampler``), then every ``world``-th id from ``rank``
    (what a shuffled :class:`~histoxai.data.datasets.PatchBatches` serves)."""
    import numpy as np

    from histoxai.data.datasets import rank_share

    ids = np.asarray(ids)
    order = ids[np.random.default_rng([seed, epoch]).permutation(len(ids))]
    return rank_share(order, group.rank, group.world, pad=True)


def sync_buffers(model: torch.nn.Module, group: Group) -> None:
    """Copy rank 0's buffers (batch-norm running statistics) to every rank. DDP does so at
    the start of each forward, so after the last training step of an epoch each rank
    holds statistics updated by its own batch; evaluation and checkpoints need one model."""
    if group.world > 1:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def all_reduce_sum(tensor: torch.Tensor, group: Group) -> torch.Tensor:
    """``tensor`` summed over ranks (in place; a no-op for one rank)."""
    if group.world > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def agree(flag: bool, group: Group, device: torch.device | str = "cpu") -> bool:
    """True on every rank when it is true on any (early stopping, non-finite loss)."""
    if group.world == 1:
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
