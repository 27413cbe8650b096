"""Operational probes: real `histoxai` processes SIGKILLed at chosen write windows.

A kill point is installed in the child process by wrapping one function before the CLI
runs (no hook in the product): ``kill=("histoxai.tracking.registry:register_regressor",
"after")`` runs the function, then the process SIGKILLs itself. Windows are therefore
exact, whatever the machine's speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

# A project that prepares in ~1 s and trains the 0.4 M-parameter test network for 1 epoch.
TINY_PARAMS = {
    "data": {"patch_size_px": 16, "phantom": {"n_samples": 2, "grid_vox": [6, 6]}},
    "model": {
        "backbone": "test_resnet", "targets": ["cc"], "registered_name": "histoxai-cc",
        "hidden_width": 16, "feature_width": 8,
    },
    "train": {
        "epochs": 1, "batch_size": 8, "schedule": "none", "lr": 0.001, "threads": 1,
        "precision": "fp32", "channels_last": False,
    },
}  # fmt: skip

_CHILD = """
import importlib, os, signal, sys
spec, when = sys.argv[1], sys.argv[2]
if spec:
    module, _, name = spec.partition(":")
    owner, _, attr = name.rpartition(".")
    target = importlib.import_module(module)
    for part in filter(None, owner.split(".")):
        target = getattr(target, part)
    orig = getattr(target, attr)
    calls = [0]
    nth = int(os.environ.get("KILL_NTH", "1"))

    def wrapped(*args, **kwargs):
        calls[0] += 1
        if when == "before" and calls[0] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
        out = orig(*args, **kwargs)
        if when == "after" and calls[0] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    setattr(target, attr, wrapped)
from histoxai.cli import main
sys.exit(main(sys.argv[3:]))
"""


def histoxai(
    root: Path, *args: str, kill: tuple[str, str] | None = None, nth: int = 1, timeout: int = 300
) -> subprocess.CompletedProcess:
    """Run ``histoxai ARGS`` in ``root`` (optionally SIGKILLed at ``kill``)."""
    cmd, env = _command(root, args, kill, nth)
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)


def start(root: Path, *args: str) -> subprocess.Popen:
    """Start ``histoxai ARGS`` in ``root`` without waiting (stderr piped)."""
    cmd, env = _command(root, args, None, 1)
    return subprocess.Popen(
        cmd, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def _command(root: Path, args, kill, nth: int) -> tuple[list[str], dict]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH", "")]),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "KILL_NTH": str(nth),
        "OMP_NUM_THREADS": "1",
    }
    env.pop("MLFLOW_RUN_ID", None)
    spec, when = kill or ("", "")
    return [sys.executable, "-c", _CHILD, spec, when, *args], env


def killed(done: subprocess.CompletedProcess) -> bool:
    return done.returncode == -9


def write_params(root: Path, **sections) -> None:
    params = json.loads(json.dumps(TINY_PARAMS))
    for section, values in sections.items():
        params.setdefault(section, {}).update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params))


@pytest.fixture
def project(tmp_path) -> Path:
    write_params(tmp_path)
    return tmp_path
