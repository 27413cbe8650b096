"""A 2-rank gloo job for tests/training/test_distributed.py: DDP steps on shards, checks.

Run::

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/training/ddp_worker.py OUT
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch

from histoxai.training.distributed import agree, all_reduce_sum, group_from_env, shard_ids, wrap_model


def main(out: str) -> None:
    torch.set_num_threads(1)
    group = group_from_env(os.environ)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    ddp = wrap_model(model, group)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(1)
    x_all, y_all = torch.randn(16, 4, generator=g), torch.randn(16, 1, generator=g)
    shards = []
    total = torch.zeros(())
    for epoch in range(3):
        ids = shard_ids(np.arange(16), group, seed=0, epoch=epoch)
        shards.append(ids.tolist())
        loss = ((ddp(x_all[ids]) - y_all[ids]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        total = total + loss.detach()  # no host sync per step
    sums = all_reduce_sum(torch.tensor([float(group.rank + 1), 1.0]), group)
    stop = agree(group.rank == 1, group)
    if group.is_main:
        state = {k: v.tolist() for k, v in model.state_dict().items()}
        result = {"state": state, "shards": shards, "sums": sums.tolist(), "stop": stop, "world": group.world}
        with open(out, "w") as fh:
            json.dump(result, fh)
    else:
        with open(out + ".rank1", "w") as fh:
            json.dump({"shards": shards, "state": {k: v.tolist() for k, v in model.state_dict().items()}}, fh)


if __name__ == "__main__":
    main(sys.argv[1])
