"""Several worker processes write one store; a SIGKILL loses at most one chunk."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from histoxai.explain.store import SaliencyStore

ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "tests/explain/explain_worker.py"


def env() -> dict[str, str]:
    path = os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def explain(patches, out, chunk=4, workers=1, slow=0.0) -> subprocess.Popen:
    args = [str(WORKER), str(patches.root), str(out), str(chunk), str(slow)]
    if workers > 1:
        args = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={workers}", *args]
    return subprocess.Popen(
        [sys.executable, *args], env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def finish(proc: subprocess.Popen) -> None:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out.decode()[-3000:]


def files(store: SaliencyStore) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes() for p in sorted((store.root / "maps").glob("*.npy")) if "chunks" not in p.name
    }


@pytest.mark.slow
def test_two_workers_write_the_bytes_one_worker_writes(patches, tmp_path):
    finish(explain(patches, tmp_path / "one"))
    finish(explain(patches, tmp_path / "two", workers=2))
    one, two = SaliencyStore(tmp_path / "one"), SaliencyStore(tmp_path / "two")
    assert (
        sorted(two.manifest["complete"]) == sorted(one.manifest["complete"])
        and len(one.manifest["complete"]) == 6
    )
    a, b = files(one), files(two)
    assert a.keys() == b.keys() and len(a) == 12
    for name in a:
        assert a[name] == b[name], name
    for pair in ("md", "sg"), ("fa", "ig"):
        assert np.abs(two.read(*pair)).max() > 0


@pytest.mark.slow
def test_a_sigkill_during_a_pair_loses_at_most_one_chunk(patches, tmp_path):
    finish(explain(patches, tmp_path / "full", slow=0.001))
    proc = explain(patches, tmp_path / "sal", slow=0.2)  # 18 patches, batches of 2: 5 chunks of 4
    table = tmp_path / ".sal.new" / "maps" / "md__slow.chunks.npy"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (table.is_file() and np.load(table)[:, 0].sum() >= 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = np.load(table)
    done = before[:, 0]
    assert 2 <= done.sum() < len(done) and SaliencyStore(tmp_path / ".sal.new").manifest["complete"] == []
    assert done.tolist() == sorted(
        done.tolist(), reverse=True
    )  # a prefix: only the chunk in progress is lost

    finish(explain(patches, tmp_path / "sal", slow=0.2))
    resumed, full = SaliencyStore(tmp_path / "sal"), SaliencyStore(tmp_path / "full")
    after = resumed.chunk_table("md", "slow")
    np.testing.assert_array_equal(after[done == 1], before[done == 1])  # finished chunks were not redone
    assert after[:, 0].all() and sorted(resumed.manifest["complete"]) == sorted(full.manifest["complete"])
    for target in "md", "fa":
        for variant in "slow", "gradcam", "sg", "ig":
            np.testing.assert_array_equal(resumed.read(target, variant), full.read(target, variant))
