"""Ray against torchrun for sharding ``histoxai explain`` (issue 13 item 4: decide by trying both).

The same explain job (``explain_patches`` with a seeded test_resnet regressor on a random
patch store, CPU) runs three ways, each in a fresh process timed from outside:

- **1 worker**: one process, no group (the reference store);
- **torchrun**: ``python -m torch.distributed.run --standalone --nproc-per-node 2``;
- **ray**: ``ray.init`` (a local cluster: GCS, raylet, worker pool) and 2 Ray tasks, each
  joining the same gloo group (``RANK``/``WORLD_SIZE``/``MASTER_*`` set by the driver), so
  the workers take disjoint chunk ranges exactly as under torchrun.

Checks that both sharded stores hold maps byte-identical to the 1-worker store, and prints
per run the wall time, the slowest worker's explain time and their difference (setup:
interpreter start, imports, group rendezvous, cluster start and teardown). Ray is not a
dependency of histoxai; install it beside the venv for this trial only::

    .venv/bin/python -m pip install --target /tmp/raypkgs ray
    PYTHONPATH=src:/tmp/raypkgs .venv/bin/python benchmarks/try_ray_explain.py [--patches 128] [--size 64]

(``/tmp/raypkgs`` last on the path: its copies of packaging, pyyaml, ... must not shadow the venv's.)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve()


def build_patches(root: Path, n: int, size: int) -> None:
    """A patch store of ``n`` random-texture ``size`` px patches (md, fa), all in ``test``."""
    from histoxai.data.store import SampleBlock, write_store

    rng = np.random.default_rng(0)
    table = pd.DataFrame(
        {"row": np.arange(n) // 32, "col": np.arange(n) % 32, "md": rng.uniform(0.5, 1.5, n), "fa": rng.uniform(0.1, 0.9, n)}
    )  # fmt: skip
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    write_store(root, [SampleBlock("s1", images, table)], {"source": "bench"}, lambda ix: ix.assign(split_random="test"))  # fmt: skip


def explain(patches: str, out: str, env: dict[str, str] | None = None) -> float:
    """Explain every patch into ``out`` as this process's share of the group in ``env``
    (torchrun's variables; none: one worker). Returns the explain seconds."""
    import torch

    from histoxai.config import ModelConfig, VariantConfig
    from histoxai.data.store import PatchStore
    from histoxai.explain.methods import resolve_variants
    from histoxai.explain.runner import explain_patches
    from histoxai.models import build_regressor
    from histoxai.training.distributed import group_from_env

    os.environ.update(env or {})
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = ModelConfig(
        backbone="test_resnet", targets=("md", "fa"), hidden_width=16, feature_width=8, dropout=0.0
    )
    model = build_regressor(cfg, [1.0, 0.5], [0.3, 0.2]).eval()
    variants = resolve_variants(
        ["gradcam", VariantConfig("sg", "smoothgrad", {"n": 4, "sigma": 0.2}), VariantConfig("ig", "integrated_gradients", {"steps": 4})]
    )  # fmt: skip
    start = time.perf_counter()
    group = group_from_env(os.environ)
    store = PatchStore(patches)
    explain_patches(model, store, store.ids(), out, variants, batch_size=8, chunk_size=16, device="cpu", seed=5, progress=False, group=group)  # fmt: skip
    seconds = time.perf_counter() - start
    if group.world > 1:
        torch.distributed.destroy_process_group()
    return seconds


def ray_daemons() -> tuple[int, float]:
    """Ray's own processes on this machine (GCS, raylet, agents; not task workers): count, RSS MiB."""
    n, rss = 0, 0.0
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (proc / "cmdline").read_bytes().decode(errors="replace")
            status = (proc / "status").read_text()
        except OSError:
            continue
        worker = cmd.startswith("ray::") and "Agent" not in cmd
        if ("/ray/" in cmd or cmd.startswith("ray::")) and not worker:
            n += 1
            rss += next(
                (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0
            )
    return n, rss / 1024


def nap() -> None:
    time.sleep(0.5)


def run_ray(patches: str, out: str, workers: int) -> dict:
    """``workers`` Ray tasks forming one gloo group; returns the seconds of each phase."""
    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, object_store_memory=80 * 2**20)
    t_init = time.perf_counter() - t0
    task = ray.remote(num_cpus=1)(explain)
    t1 = time.perf_counter()
    ray.get([ray.remote(num_cpus=1)(nap).remote() for _ in range(workers)])  # start the workers
    t_workers = time.perf_counter() - t1
    daemons, daemon_mib = ray_daemons()
    with socket.socket() as s:  # after the workers took their ports
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    envs = [
        {"RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": str(workers), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        for r in range(workers)
    ]  # fmt: skip
    seconds = ray.get([task.remote(patches, out, env) for env in envs])
    t2 = time.perf_counter()
    ray.shutdown()
    return {
        "init_s": t_init,
        "workers_s": t_workers,
        "explain_s": max(seconds),
        "shutdown_s": time.perf_counter() - t2,
        "daemons": daemons,
        "daemon_mib": daemon_mib,
        "ray": ray.__version__,
    }


def timed(cmd: list[str]) -> tuple[float, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return wall, done.stdout


def maps(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "maps").glob("*.npy")) if "chunks" not in p.name}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patches", type=int, default=128)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)  # PATCHES OUT: one (torchrun) worker
    parser.add_argument("--ray", nargs=2, help=argparse.SUPPRESS)  # PATCHES OUT: the Ray driver
    args = parser.parse_args()
    if args.worker:
        print(json.dumps({"explain_s": explain(*args.worker)}))
        return
    if args.ray:
        print(json.dumps(run_ray(*args.ray, args.workers)))
        return

    py, me = sys.executable, str(HERE)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build_patches(root / "patches", args.patches, args.size)
        p = str(root / "patches")
        runs = {}
        wall, out = timed([py, me, "--worker", p, str(root / "one")])
        runs["1 worker"] = (wall, json.loads(out.splitlines()[-1])["explain_s"], "")
        torchrun = [py, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.workers}"]
        wall, out = timed([*torchrun, me, "--worker", p, str(root / "torchrun")])
        slowest = max(map(float, re.findall(r'"explain_s": ([0-9.]+)', out)))  # lines may interleave
        runs[f"torchrun x{args.workers}"] = (wall, slowest, "")
        try:
            wall, out = timed([py, me, "--ray", p, str(root / "ray"), "--workers", str(args.workers)])
            info = json.loads(out.splitlines()[-1])
            note = (
                f"ray {info['ray']}: init {info['init_s']:.1f} s, workers up {info['workers_s']:.1f} s, "
                f"shutdown {info['shutdown_s']:.1f} s; {info['daemons']} daemons, {info['daemon_mib']:.0f} MiB RSS"
            )
            runs[f"ray x{args.workers}"] = (wall, info["explain_s"], note)
        except RuntimeError as err:
            print(f"ray run failed (is ray on PYTHONPATH?): {str(err)[-1500:]}")
        reference = maps(root / "one")
        print(
            f"{args.patches} patches at {args.size} px, test_resnet, gradcam + smoothgrad(4) + ig(4), 2 targets, CPU"
        )
        print(f"{'run':<14} {'wall s':>8} {'explain s':>10} {'setup s':>8}  byte-identical to 1 worker")
        for name, (wall, explain_s, note) in runs.items():
            folder = {"1 worker": "one"}.get(name, name.split()[0])
            mine = maps(root / folder)
            differ = sorted(k for k in reference.keys() | mine.keys() if reference.get(k) != mine.get(k))
            same = f"{len(reference) - len(differ)}/{len(reference)} files" + (
                f" differ: {differ}" if differ else ""
            )
            print(f"{name:<14} {wall:8.1f} {explain_s:10.1f} {wall - explain_s:8.1f}  {same}  {note}")


if __name__ == "__main__":
    main()
