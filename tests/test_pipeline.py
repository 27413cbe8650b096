"""`dvc repro` of the pipeline in a temporary clone of this working tree."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from histoxai.data.store import PatchStore

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent  # the venv's bin: dvc and histoxai, whether or not on PATH
DVC = str(BIN / "dvc")

TINY = {
    "data": {
        "patch_size_px": 32,
        "phantom": {"n_samples": 2, "grid_vox": [6, 6]},
        "split": {"train_samples": ["s1"]},
    },
    "train": {"epochs": 1, "batch_size": 16},
    "tune": {"n_trials": 2},
    "explain": {
        "methods": ["gradcampp", {"name": "sg", "method": "smoothgrad", "params": {"sigma": 0.2, "n": 2}}]
    },
    "xai_eval": {
        "max_patches": 8,
        "steps": 3,
        "sanity_patches": 2,
        "robustness_patches": 2,
        "robustness_draws": 2,
        "bootstrap": 50,
        "intervention_patches": 0,
    },
}


def run(cmd: list[str], cwd: Path, env: dict) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


@pytest.fixture
def clone(tmp_path, repo_root) -> tuple[Path, dict]:
    """A fresh git repo holding this working tree's files (tracked and new, not ignored)."""
    files = (
        subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"],
            cwd=repo_root,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    dest = tmp_path / "clone"
    for name in filter(None, files):
        if (repo_root / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo_root / name, dest / name)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    for section, values in TINY.items():
        _merge(params.setdefault(section, {}), values)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(dest / "src"),
        "DVC_NO_ANALYTICS": "1",
        "MLFLOW_TRACKING_URI": f"sqlite:///{dest / 'mlflow.db'}",
    }
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    run(["git", "init", "-q"], dest, env)
    run(["git", "add", "-A"], dest, env)
    run([*git, "commit", "-qm", "clone"], dest, env)
    return dest, env


def _merge(into: dict, values: dict) -> None:
    for k, v in values.items():
        if isinstance(v, dict):
            _merge(into.setdefault(k, {}), v)
        else:
            into[k] = v


def test_prepare_stage_reproduces_and_round_trips_through_the_remote(clone):
    dest, env = clone
    out = run([DVC, "repro", "prepare"], dest, env)
    assert "patch store" in out
    store = PatchStore(dest / "data/patches")
    assert len(store) == 2 * 6 * 6 and store.patch_size == 32
    lock = yaml.safe_load((dest / "dvc.lock").read_text())
    assert lock["stages"]["prepare"]["outs"][0]["path"] == "data/patches"
    assert "up to date" in run([DVC, "repro", "prepare"], dest, env)

    before = store.images(np.arange(len(store)))
    run([DVC, "push", "prepare"], dest, env)
    shutil.rmtree(dest / "data/patches")
    run([DVC, "pull", "prepare"], dest, env)
    np.testing.assert_array_equal(PatchStore(dest / "data/patches").images(np.arange(len(store))), before)


def test_whole_pipeline_reproduces_on_a_tiny_phantom(clone):
    dest, env = clone
    run([DVC, "repro"], dest, env)
    for name in ("histoxai-mdfa", "histoxai-cc"):
        assert (dest / "models" / name / "predictions.parquet").is_file()
        assert json.loads((dest / "reports/evaluate" / name / "all_metrics.json").read_text())
        assert (dest / "data/saliency" / name / "manifest.json").is_file()
        assert json.loads((dest / "reports/xai_eval" / name / "ranking.json").read_text())
    status = run([DVC, "status", "dvc.yaml"], dest, env)  # thesis/dvc.yaml is another pipeline
    assert "up to date" in status, status
    metrics = run([DVC, "metrics", "show"], dest, env)
    assert "reports/evaluate/histoxai-mdfa/metrics/md.json" in metrics and "reports/xai_eval" in metrics
    assert max(map(len, metrics.splitlines())) <= 120, metrics

    # the opt-in study pipeline: plain `dvc repro` ran no study; this one explains its champion
    assert not (dest / "models/tune").exists()
    run([DVC, "repro", "pipelines/tune/dvc.yaml"], dest, env)
    best = json.loads((dest / "models/tune/histoxai-mdfa/histoxai-mdfa/summary.json").read_text())["best"]
    manifest = json.loads((dest / "data/saliency/histoxai-mdfa-tuned/manifest.json").read_text())
    candidate = json.loads((dest / "models/histoxai-mdfa/run.json").read_text())
    assert manifest["model_source"].startswith("champion of study histoxai-mdfa"), manifest["model_source"]
    assert manifest["model_version"] == str(best["model_version"]) != str(candidate["model_version"])
    assert manifest["run_id"] == best["run_id"] and manifest["model_uri"] == best["model_uri"]
