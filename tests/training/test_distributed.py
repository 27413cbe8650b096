"""Data-parallel training helpers on 2 CPU processes (gloo) through torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from histoxai.training.distributed import Group, agree, all_reduce_sum, shard, shard_ids, wrap_model

ROOT = Path(__file__).resolve().parents[2]


def test_one_process_is_a_group_of_one():
    g = Group()
    model = torch.nn.Linear(2, 1)
    assert wrap_model(model, g) is model and agree(True, g) and not agree(False, g)
    t = torch.ones(2)
    assert all_reduce_sum(t, g) is t and t.tolist() == [1, 1]
    assert shard(10, g) == range(10)


def test_shards_cover_every_id_once_per_epoch_with_equal_lengths():
    ids = np.arange(10)
    parts = [shard_ids(ids, Group(r, 3), seed=1, epoch=2) for r in range(3)]
    assert {len(p) for p in parts} == {4}  # padded to 12 by wrapping
    assert set(np.concatenate(parts)) == set(ids)
    assert not np.array_equal(shard_ids(ids, Group(0, 3), 1, 2), shard_ids(ids, Group(0, 3), 1, 3))
    assert [list(shard(10, Group(r, 3))) for r in range(3)] == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]


@pytest.mark.slow
def test_two_gloo_ranks_train_as_one_process_on_the_whole_batch(tmp_path):
    out = tmp_path / "ddp.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        "OMP_NUM_THREADS": "1",
    }
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           str(ROOT / "tests/training/ddp_worker.py"), str(out)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    got, other = json.loads(out.read_text()), json.loads(Path(f"{out}.rank1").read_text())
    assert got["world"] == 2 and got["sums"] == [3.0, 2.0] and got["stop"] is True  # rank 1 asked to stop
    assert got["state"] == other["state"]  # replicas stay identical
    # The same steps in one process: the mean of the two shards' losses on each epoch's batch.
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 4, generator=g), torch.randn(16, 1, generator=g)
    for a, b in zip(got["shards"], other["shards"]):
        assert sorted(a + b) == list(range(16))
        loss = (((model(x[a]) - y[a]) ** 2).mean() + ((model(x[b]) - y[b]) ** 2).mean()) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
    for k, v in model.state_dict().items():
        np.testing.assert_allclose(np.asarray(got["state"][k]), v.numpy(), rtol=1e-5, atol=1e-6)
