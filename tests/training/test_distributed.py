"""Data-parallel training on 2 CPU processes (gloo) through torchrun: the helpers, and
``histoxai train`` itself."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from mlflow import MlflowClient

from histoxai.config import to_dict
from histoxai.data.datasets import PatchBatches
from histoxai.models import load_checkpoint
from histoxai.training.distributed import Group, agree, all_reduce_sum, shard, shard_ids, wrap_model
from histoxai.training.fit import evaluate
from tests.training.conftest import tiny_config

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


def torchrun_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID")}
    return {**env, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]), "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_histoxai_train_on_two_gloo_ranks_trains_one_model_that_rank_0_alone_publishes(phantom, tmp_path):
    overrides = ["model.targets=[cc]", "model.registered_name=histoxai-cc", "train.precision=fp32"]
    overrides += ["train.frozen_epochs=1", "train.epochs=3", "base.seeds=[0, 1]"]  # both phases, 2 seeds
    cfg = tiny_config(phantom, tmp_path, *overrides)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
    fits = tmp_path / "fits"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           str(ROOT / "tests/training/train_worker.py"), str(fits), "train"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=torchrun_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]

    ranks = [[json.loads(line) for line in Path(f"{fits}.rank{r}").read_text().splitlines()] for r in (0, 1)]
    assert [len(r) for r in ranks] == [2, 2]  # every rank trained both seeds
    for zero, one in zip(*ranks):
        assert zero["state_sha256"] == one["state_sha256"]  # replicas end identical, buffers too
        assert zero["history"] == one["history"] and zero["best_epoch"] == one["best_epoch"]
        assert [h["phase"] for h in zero["history"]][:1] == ["frozen"]
        assert all(math.isfinite(v) for h in zero["history"] for k, v in h.items() if k.startswith("val/"))
    assert ranks[0][0]["state_sha256"] != ranks[0][1]["state_sha256"]  # the seeds differ

    # rank 0 alone wrote the model directory and one MLflow run with one registered version
    out = tmp_path / "models" / "histoxai-cc"
    assert {p.name for p in (tmp_path / "models").iterdir()} == {"histoxai-cc", ".histoxai-cc.lock"}
    assert {p.name for p in out.iterdir()} == {"model.pt", "predictions.parquet", "run.json", "seeds"}
    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(db, registry_uri=db)  # not the process-wide registry an earlier test set
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    info = json.loads((out / "run.json").read_text())
    assert [r.info.run_id for r in runs] == [info["run_id"]]
    # one version, from rank 0's run, published (search rows carry no aliases)
    versions = client.search_model_versions("name='histoxai-cc'")
    assert {(str(v.version), v.run_id) for v in versions} == {(str(info["model_version"]), info["run_id"])}
    assert str(client.get_model_version_by_alias("histoxai-cc", "candidate").version) == str(
        info["model_version"]
    )

    # the logged val metrics (sums over both ranks' shares) are those of the saved model on the
    # whole val split, evaluated in this one process
    best = ranks[0][0]["best_epoch"]
    logged = {
        k: client.get_metric_history(info["run_id"], k) for k in ("val/r2_cc", "val/mse_cc", "val/loss")
    }
    logged = {k: next(m.value for m in v if m.step == best) for k, v in logged.items()}
    model = load_checkpoint(out / "model.pt")
    val = PatchBatches(phantom, phantom.ids("val"), ("cc",), 32)
    got = evaluate(model, val, "val", torch.device("cpu"))
    assert len(val.ids) >= 32 and math.isfinite(got["val/r2_cc"])
    for k, v in logged.items():
        assert v == pytest.approx(got[k], rel=1e-4, abs=1e-6), k
