"""SIGKILL `histoxai train` at each write window: the model directory is always one
complete unit (the previous one or the new one), no alias ever points at a half-registered
version, and the next run deletes or finishes what the killed one left (no pending
version, no run stuck RUNNING)."""

from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient

from histoxai.data.provenance import file_sha256
from histoxai.io import OutputLockedError, output_lock
from histoxai.models import load_checkpoint
from histoxai.tracking.registry import PENDING, STATE_TAG
from tests.ops.conftest import histoxai, killed

pytestmark = pytest.mark.slow
NAME = "histoxai-cc"

# In pipeline order; each killed run also recovers after the one before it.
WINDOWS = [  # (window, function wrapped, before/after, which call, the model dir the kill leaves)
    ("training (first epoch logged)", "histoxai.tracking.runs:TrackedRun.log_metrics", "before", 1, "previous"),
    ("registered, dir not swapped", "histoxai.tracking.registry:register_regressor", "after", 1, "previous"),
    ("dir swapped, aliases not set", "histoxai.io:_exchange", "after", 1, "new"),
    # call 1 is the recovery publishing the version of the window before
    ("aliases set, run not ended", "histoxai.tracking.registry:publish_version", "after", 2, "new"),
]  # fmt: skip


def _model_dir(root) -> dict:
    """run.json of the model directory, after checking its three files belong together."""
    out = root / "models" / NAME
    info = json.loads((out / "run.json").read_text())
    assert info["predictions_sha256"] == file_sha256(out / "predictions.parquet")
    assert load_checkpoint(out / "model.pt").checkpoint_extra["run_id"] == info["run_id"]
    return info


def _registry(client) -> dict:
    versions = [
        client.get_model_version(NAME, v.version) for v in client.search_model_versions(f"name='{NAME}'")
    ]
    return {
        str(v.version): (v.tags.get(STATE_TAG), sorted(v.aliases)) for v in versions
    }  # search omits aliases


def _running(client) -> list[str]:
    exp = client.get_experiment_by_name("histoxai")
    runs = client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")
    return [r.info.run_id for r in runs]


def test_a_killed_train_never_leaves_a_mixed_model_dir_or_a_visible_half_registration(project):
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    assert histoxai(project, "prepare").returncode == 0
    done = histoxai(project, "train")
    assert done.returncode == 0, done.stderr[-3000:]
    for window, spec, when, nth, expected in WINDOWS:
        previous = _model_dir(project)
        done = histoxai(project, "train", "--set", "base.seed=1", kill=(spec, when), nth=nth)
        assert killed(done), f"{window}: {done.stderr[-3000:]}"
        now = _model_dir(project)  # one complete unit, whatever the window
        assert (now["run_id"] == previous["run_id"]) == (expected == "previous"), window
        for version, (state, aliases) in _registry(client).items():
            assert not (state == PENDING and aliases), f"{window}: pending version {version} has {aliases}"
    done = histoxai(project, "train")  # the next run cleans up after the last kill
    assert done.returncode == 0, done.stderr[-3000:]
    final = _model_dir(project)
    registry = _registry(client)
    assert all(state != PENDING for state, _ in registry.values()), registry
    assert registry[final["model_version"]][1][0] == "candidate"
    assert _running(client) == []
    # window 2's version (registered, directory never swapped in) was deleted; window 3's
    # (directory committed, killed before its aliases) was published by the next run
    assert sorted(registry, key=int) == ["1", "3", "4", final["model_version"]], registry
    assert "cleaned up after a killed run" in done.stdout
    exp = client.get_experiment_by_name("histoxai").experiment_id
    statuses = sorted(r.info.status for r in client.search_runs([exp]))
    assert statuses == ["FAILED"] * 2 + ["FINISHED"] * 4  # windows 1-2 failed; 3-4 had committed
    assert sorted(p.name for p in (project / "models").iterdir()) == [f".{NAME}.lock", NAME]


def test_a_second_train_on_one_model_dir_is_refused(project, tmp_path):
    from histoxai.config import load_config
    from histoxai.training.publish import train_and_publish

    assert histoxai(project, "prepare").returncode == 0
    cfg = load_config(project / "params.yaml", [f"base.patches_dir={project / 'data/patches'}",
                                                 f"base.models_dir={project / 'models'}"])  # fmt: skip
    with output_lock(project / "models" / NAME):
        with pytest.raises(OutputLockedError, match="being written by another process"):
            train_and_publish(cfg, project, f"sqlite:///{tmp_path / 'other.db'}", progress=False)
    assert not (project / "models" / NAME).exists() and not (tmp_path / "other.db").exists()
