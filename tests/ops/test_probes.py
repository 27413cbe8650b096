"""The probe set of issue 16: every bad input a hostile but fair user tries, on a real tiny
project (a prepared store, a trained and registered model, its saliency store and reports).

Each probe is one line of ``PROBES``: the command line, what is damaged first (``SETUP``),
extra environment, and the text the error must contain (the key, flag or file). It runs
the real CLI in-process on a fresh copy of the project and asserts: exit status 2, one
``histoxai <command>: error:`` line naming that text and no traceback, and not one file of
the project written or changed (the error came before any work). ``$HISTOXAI_PROBE_COLD`` runs each probe as a new
process instead (seconds then include Python's start and imports). (``dashboard`` is the one command that starts with a
damaged store: it names the file on its start-up line and its Main page.) Each probe's seconds to
the error are appended to ``$HISTOXAI_PROBE_LOG`` when set (``benchmarks/probe_report.py``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from histoxai import cli
from tests.ops.conftest import REPO, histoxai, write_params

pytestmark = pytest.mark.slow

DEAD = "http://127.0.0.1:1"
SG = "explain.methods=[{name: sg, method: smoothgrad, params: {%s}}]"
STORE = "data/patches"
MODEL = "models/histoxai-cc"
SAL = "data/saliency/histoxai-cc"


def _truncate(path: str, keep: float = 0.5) -> None:
    p = Path(path)
    p.write_bytes(p.read_bytes()[: int(p.stat().st_size * keep)])


def _offset_past_array(path: str) -> None:
    index = pd.read_parquet(path)
    index.loc[index.index[-1], "offset"] = 10_000
    index.to_parquet(path)


SETUP = {  # name: what is damaged before the command runs
    "npy truncated": lambda: _truncate(f"{STORE}/patches/s1.npy"),
    "npy garbage": lambda: Path(f"{STORE}/patches/s1.npy").write_bytes(b"garbage" * 100),
    "npy missing": lambda: Path(f"{STORE}/patches/s2.npy").unlink(),
    "npy wrong shape": lambda: np.save(f"{STORE}/patches/s1.npy", np.zeros((36, 8, 8, 3), np.uint8)),
    "masks truncated": lambda: _truncate(f"{STORE}/masks/s2.npy", 0.3),
    "card broken": lambda: Path(f"{STORE}/card.json").write_text("{not json"),
    "card missing": lambda: Path(f"{STORE}/card.json").unlink(),
    "card not an object": lambda: Path(f"{STORE}/card.json").write_text("[1, 2]"),
    "index missing": lambda: Path(f"{STORE}/index.parquet").unlink(),
    "index garbage": lambda: Path(f"{STORE}/index.parquet").write_bytes(b"PAR1 nonsense"),
    "offset past array": lambda: _offset_past_array(f"{STORE}/index.parquet"),
    "store missing": lambda: shutil.rmtree(STORE),
    "model.pt truncated": lambda: _truncate(f"{MODEL}/model.pt"),
    "model.pt garbage": lambda: Path(f"{MODEL}/model.pt").write_bytes(b"not a checkpoint"),
    "model.pt missing": lambda: Path(f"{MODEL}/model.pt").unlink(),
    "run.json broken": lambda: Path(f"{MODEL}/run.json").write_text("{"),
    "run.json missing": lambda: Path(f"{MODEL}/run.json").unlink(),
    "predictions missing": lambda: Path(f"{MODEL}/predictions.parquet").unlink(),
    "predictions garbage": lambda: Path(f"{MODEL}/predictions.parquet").write_bytes(b"junk"),
    "manifest broken": lambda: Path(f"{SAL}/manifest.json").write_text("{"),
    "map truncated": lambda: _truncate(f"{SAL}/maps/cc__gradcam.npy"),
    "map missing": lambda: Path(f"{SAL}/maps/cc__gradcam.npy").unlink(),
    "saliency missing": lambda: shutil.rmtree(SAL),
    "params missing": lambda: Path("params.yaml").unlink(),
    "params garbage": lambda: Path("params.yaml").write_text("train: [unclosed\n"),
    "params a list": lambda: Path("params.yaml").write_text("- train\n- lr\n"),
    "params section a list": lambda: Path("params.yaml").write_text("train: [1, 2]\n"),
    "space bad key": lambda: Path("space.yaml").write_text("params:\n  train.lrr: {type: float, low: 0.1, high: 1}\n"),
    "space bad range": lambda: Path("space.yaml").write_text("params:\n  train.lr: {type: float, low: 1, high: 0.1}\n"),
    "space missing": lambda: None,
    "space ok": lambda: Path("space.yaml").write_text("params:\n  train.lr: {type: float, low: 0.001, high: 0.1}\n"),
    "summary garbage": lambda: Path("summary.mat").write_bytes(b"not a mat file"),
    "users file missing": lambda: None,
    "users garbage": lambda: Path("users.txt").write_text("no colon here\n"),
}  # fmt: skip

# (command line, setup, environment, text the one-line error must contain)
PROBES = [
    # --- non-finite numbers in range-checked keys
    ("train --set train.lr=.nan", None, {}, "train.lr"),
    ("train --set train.lr=.inf", None, {}, "train.lr"),
    ("train --set train.lr=-.inf", None, {}, "train.lr"),
    ("train --set model.dropout=.nan", None, {}, "model.dropout"),
    ("train --set train.weight_decay=.nan", None, {}, "train.weight_decay"),
    ("train --set train.initial_lr=.inf", None, {}, "train.initial_lr"),
    ("train --set train.augment.stain_jitter=.nan", None, {}, "train.augment.stain_jitter"),
    ("train --set model.loss_weights={cc: .nan}", None, {}, "model.loss_weights.cc"),
    ("prepare --set data.phantom.tissue_overlap=.nan", None, {}, "data.phantom.tissue_overlap"),
    ("prepare --set data.phantom.noise_sd_md=.inf", None, {}, "data.phantom.noise_sd_md"),
    ("evaluate --set evaluate.structure_sigma_px=.nan", None, {}, "evaluate.structure_sigma_px"),
    ("xai-eval --set xai_eval.blur_sigma_px=.inf", None, {}, "xai_eval.blur_sigma_px"),
    ("xai-eval --set xai_eval.confidence=.nan", None, {}, "xai_eval.confidence"),
    ("figures --set figures.alpha=.nan", None, {}, "figures.alpha"),
    ("dashboard --set dashboard.session_hours=.inf", None, {}, "dashboard.session_hours"),
    ("explain --set " + SG % "sigma: .nan", None, {}, "sigma"),
    # --- split fractions
    ("prepare --set data.split.fractions=[-0.2,0.6,0.6]", None, {}, "data.split.fractions"),
    ("prepare --set data.split.fractions=[0.5,0.5]", None, {}, "data.split.fractions"),
    ("prepare --set data.split.fractions=[0.6,0.2,0.3]", None, {}, "data.split.fractions"),
    ("prepare --set data.split.fractions=[.nan,0.5,0.5]", None, {}, "data.split.fractions"),
    ("prepare --set data.split.fractions=abc", None, {}, "data.split.fractions"),
    ("prepare --set data.split.scheme=kfold", None, {}, "data.split.scheme"),
    ("prepare --set data.split.block_vox=0", None, {}, "data.split.block_vox"),
    # --- saliency method parameters
    ("explain --set " + SG % "n: 0", None, {}, "params.n"),
    ("explain --set " + SG % "sigma: -0.2", None, {}, "params.sigma"),
    ("explain --set " + SG % "sigma: 0", None, {}, "params.sigma"),
    ("explain --set explain.methods=[{name: occ, method: occlusion, params: {window: 0}}]", None, {}, "params.window"),
    ("explain --set explain.methods=[{name: ig, method: integrated_gradients, params: {steps: 0}}]", None, {}, "params.steps"),
    ("explain --set explain.methods=[nosuchmethod]", None, {}, "nosuchmethod"),
    ("explain --set explain.methods=[]", None, {}, "explain.methods"),
    ("explain --set " + SG % "colour: red", None, {}, "colour"),
    ("explain --set " + SG % "n: many", None, {}, "n"),
    ("explain --set explain.targets=[md]", None, {}, "explain.targets"),
    ("explain --set explain.score=up", None, {}, "explain.score"),
    ("explain --set explain.split=holdout", None, {}, "explain.split"),
    ("explain --set explain.batch_size=0", None, {}, "explain.batch_size"),
    # --- ports, storage, backbone, tracking
    ("dashboard --port 70000", None, {}, "70000"),
    ("dashboard --port http", None, {}, "http"),
    ("dashboard --set dashboard.port=70000", None, {}, "dashboard.port"),
    ("dashboard --host 0.0.0.0", None, {}, "0.0.0.0"),
    ("tune --storage mysql://u:p@localhost/optuna --space space.yaml", "space ok", {}, "mysql"),
    ("tune --storage nosuch://x --space space.yaml", "space ok", {}, "nosuch"),
    ("train --set model.backbone=nosuch_net", None, {}, "nosuch_net"),
    ("train --set model.backbone=convnext_atto", None, {}, "convnext_atto"),
    ("train", None, {"MLFLOW_TRACKING_URI": DEAD}, "127.0.0.1:1"),
    ("explain", None, {"MLFLOW_TRACKING_URI": DEAD}, "127.0.0.1:1"),
    ("evaluate", None, {"MLFLOW_TRACKING_URI": DEAD}, "127.0.0.1:1"),
    ("xai-eval", None, {"MLFLOW_TRACKING_URI": DEAD}, "127.0.0.1:1"),
    ("promote --model histoxai-cc --version 1", None, {"MLFLOW_TRACKING_URI": DEAD}, "127.0.0.1:1"),
    ("tune --space space.yaml", "space ok", {"MLFLOW_TRACKING_URI": DEAD}, "127.0.0.1:1"),
    ("train", None, {"MLFLOW_TRACKING_URI": "sqlite:////nonexistent/dir/mlflow.db"}, "/nonexistent/dir"),
    ("promote --model histoxai-cc --version 1", None, {"MLFLOW_TRACKING_URI": "sqlite:////nonexistent/x.db"}, "/nonexistent"),
    ("train", None, {"MLFLOW_TRACKING_URI": "ftp://example.org/mlflow"}, "ftp://"),
    # --- unknown keys, wrong types, bad overrides and params files
    ("train --set train.lrr=0.1", None, {}, "train.lrr"),
    ("train --set nosection.x=1", None, {}, "nosection"),
    ("train --set train.epochs=abc", None, {}, "train.epochs"),
    ("train --set train.epochs=1.5", None, {}, "train.epochs"),
    ("train --set train.epochs=0", None, {}, "train.epochs"),
    ("train --set train.batch_size=-4", None, {}, "train.batch_size"),
    ("train --set train.channels_last=maybe", None, {}, "train.channels_last"),
    ("train --set train.precision=fp8", None, {}, "train.precision"),
    ("train --set train.schedule=linear", None, {}, "train.schedule"),
    ("train --set model.targets=[xx]", None, {}, "model.targets"),
    ("train --set model.targets=[]", None, {}, "model.targets"),
    ("train --set model.targets=[cc,cc]", None, {}, "model.targets"),
    ("train --set model.loss_weights={md: 1}", None, {}, "model.loss_weights.md"),
    ("train --set model.registered_name=a/b", None, {}, "model.registered_name"),
    ("train --set base.seed=-1", None, {}, "base.seed"),
    ("train --set base.seeds=[1,1]", None, {}, "base.seeds"),
    ("train --set train.lr", None, {}, "train.lr"),
    ("train --set train.lr=[", None, {}, "train.lr"),
    ("train --set train.lr.x=1", None, {}, "train.lr"),
    ("prepare --set data.patch_size_px=4", None, {}, "data.patch_size_px"),
    ("prepare --set data.source=tiff", None, {}, "data.source"),
    ("prepare --set data.phantom.grid_vox=[6]", None, {}, "data.phantom.grid_vox"),
    ("prepare --set data.micromen.samples=[one]", None, {}, "data.micromen.samples"),
    ("prepare --set data.source=micromen --set data.micromen.root=/nonexistent/micromen", None, {}, "/nonexistent/micromen"),
    ("train --params nosuch.yaml", None, {}, "nosuch.yaml"),
    ("train", "params missing", {}, "params.yaml"),
    ("train", "params garbage", {}, "params.yaml"),
    ("train", "params a list", {}, "params.yaml"),
    ("train", "params section a list", {}, "train"),
    # --- a damaged patch store, for every command that reads it
    ("train", "npy truncated", {}, "patches/s1.npy"),
    ("train", "npy garbage", {}, "patches/s1.npy"),
    ("train", "npy missing", {}, "patches/s2.npy"),
    ("train", "npy wrong shape", {}, "patches/s1.npy"),
    ("train", "masks truncated", {}, "masks/s2.npy"),
    ("train", "card broken", {}, "card.json"),
    ("train", "card missing", {}, "card.json"),
    ("train", "card not an object", {}, "card.json"),
    ("train", "index missing", {}, "index.parquet"),
    ("train", "index garbage", {}, "index.parquet"),
    ("train", "offset past array", {}, "index.parquet"),
    ("evaluate", "npy truncated", {}, "patches/s1.npy"),
    ("evaluate", "offset past array", {}, "index.parquet"),
    ("evaluate", "card broken", {}, "card.json"),
    ("explain", "npy garbage", {}, "patches/s1.npy"),
    ("explain", "offset past array", {}, "index.parquet"),
    ("explain", "store missing", {}, "data/patches"),
    ("xai-eval", "npy truncated", {}, "patches/s1.npy"),
    ("xai-eval", "index garbage", {}, "index.parquet"),
    ("figures", "card broken", {}, "card.json"),
    # --- a damaged or mismatched model
    ("explain", "model.pt truncated", {}, "model.pt"),
    ("explain", "model.pt garbage", {}, "model.pt"),
    ("explain", "model.pt missing", {}, "model.pt"),
    ("explain", "run.json broken", {}, "run.json"),
    ("explain", "run.json missing", {}, "run.json"),
    ("explain --set base.patches_dir=data/patches32", None, {}, "16"),
    ("evaluate --set base.patches_dir=data/patches32", None, {}, "16"),
    ("xai-eval --set base.patches_dir=data/patches32", None, {}, "16"),
    ("evaluate", "run.json broken", {}, "run.json"),
    ("evaluate", "predictions missing", {}, "predictions.parquet"),
    ("evaluate", "predictions garbage", {}, "predictions.parquet"),
    ("evaluate --model-dir models/nosuch", None, {}, "models/nosuch"),
    ("xai-eval --checkpoint models/histoxai-cc/model.pt", "model.pt truncated", {}, "model.pt"),
    ("xai-eval --checkpoint models/nosuch/model.pt", None, {}, "models/nosuch/model.pt"),
    ("explain --set explain.model_dir= --set explain.model_uri=models:/nosuch@champion", None, {}, "nosuch"),
    ("explain --set explain.model_dir= --set explain.model_uri=models:/histoxai-cc/99", None, {}, "99"),
    ("explain --set explain.model_dir= --set explain.model_uri=runs:/abc", None, {}, "runs:/abc"),
    # --- a damaged saliency store
    ("xai-eval", "manifest broken", {}, "manifest.json"),
    ("xai-eval", "map truncated", {}, "cc__gradcam.npy"),
    ("xai-eval", "map missing", {}, "cc__gradcam"),
    ("xai-eval", "saliency missing", {}, "saliency/histoxai-cc"),
    ("xai-eval --saliency-dir data/saliency/nosuch", None, {}, "data/saliency/nosuch"),
    ("figures --saliency-dir data/saliency/nosuch --model-dir models/nosuch", None, {}, "nosuch"),
    ("figures", "manifest broken", {}, "manifest.json"),
    # --- promote, tune, baseline, dashboard flags
    ("promote --model nosuch --version 1", None, {}, "nosuch"),
    ("promote --model histoxai-cc --version 99", None, {}, "99"),
    ("promote --model histoxai-cc --version one", None, {}, "one"),
    ("tune --space space.yaml", "space missing", {}, "space.yaml"),
    ("tune --space space.yaml", "space bad key", {}, "train.lrr"),
    ("tune --space space.yaml", "space bad range", {}, "train.lr"),
    ("tune --space space.yaml --n-trials 0", "space ok", {}, "n_trials"),
    ("tune --space space.yaml --sampler grid", "space ok", {}, "sampler"),
    ("tune --space space.yaml --pruner sometimes", "space ok", {}, "pruner"),
    ("tune --space space.yaml --workers 0", "space ok", {}, "workers"),
    ("tune --study-name nosuch --finalize --space space.yaml", "space bad key", {}, "train.lrr"),
    ("baseline --summary nosuch.mat", None, {}, "nosuch.mat"),
    ("baseline --summary summary.mat", "summary garbage", {}, "summary.mat"),
    ("baseline --summary summary.mat --repeats 0", "summary garbage", {}, "repeats"),
    ("dashboard --set dashboard.users_file=users.txt", "users file missing", {}, "users.txt"),
    ("dashboard --set dashboard.users_file=users.txt", "users garbage", {}, "users.txt"),
    ("dashboard", None, {"HISTOXAI_DASH_USERS": "ana"}, "HISTOXAI_DASH_USERS"),
    ("nosuchcommand", None, {}, "nosuchcommand"),
]  # fmt: skip


@pytest.fixture(scope="module")
def golden(tmp_path_factory) -> Path:
    """A tiny project: prepared (16 px, and a 32 px store beside it), trained, registered,
    explained (Grad-CAM on 4 patches) and its xai-eval report."""
    root = tmp_path_factory.mktemp("golden")
    write_params(
        root,
        explain={"model_dir": MODEL, "model_uri": "models:/histoxai-cc@champion", "output_dir": SAL,
                 "methods": ["gradcam"], "max_patches": 4, "batch_size": 4, "chunk_size": 4, "device": "cpu"},
        xai_eval={"max_patches": 4, "steps": 2, "batch_size": 4, "sanity_patches": 0, "robustness_patches": 0,
                  "bootstrap": 10, "intervention_patches": 0, "n_bins": 1, "device": "cpu"},
    )  # fmt: skip
    steps = [
        ["prepare"],
        ["prepare", "--set", "base.patches_dir=data/patches32", "--set", "data.patch_size_px=32"],
        ["train"],
        ["explain"],
    ]
    for args in steps:
        done = histoxai(root, *args)
        assert done.returncode == 0, f"{args}: {done.stderr[-3000:]}"
    return root


def _snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (lock files aside: they hold the last locker's pid) and
    its content hash."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(".lock")
    }


@pytest.mark.parametrize(
    "line, setup, env, needle", PROBES, ids=[f"{p[0]}|{p[1] or ''}|{','.join(p[2])}" for p in PROBES]
)
def test_a_bad_input_is_one_clear_error_before_any_work(
    golden, tmp_path, monkeypatch, line, setup, env, needle
):
    root = tmp_path / "project"
    shutil.copytree(golden, root, ignore=shutil.ignore_patterns("mlartifacts"), symlinks=True)
    (root / "mlartifacts").symlink_to(golden / "mlartifacts")  # read-only in every probe
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if setup:
        SETUP[setup]()
    before = _snapshot(root)
    rc, err, seconds = _run(line.split(" ") if "{" not in line else _split(line))
    lines = [x for x in err.splitlines() if x.strip()]
    assert rc == 2, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert lines and ": error: " in lines[-1] and needle in lines[-1], err[-3000:]
    assert _snapshot(root) == before, "the failed command wrote or changed files"
    log = os.environ.get("HISTOXAI_PROBE_LOG")
    if log:
        with open(log, "a") as f:
            f.write(
                json.dumps({"probe": f"{line} | {setup or ''}", "seconds": seconds, "error": lines[-1]})
                + "\n"
            )


def _split(line: str) -> list[str]:
    """Split a command line at spaces outside ``{...}`` (flow mappings hold spaces)."""
    out, depth, word = [], 0, ""
    for ch in line:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if ch == " " and depth == 0:
            out.append(word)
            word = ""
        else:
            word += ch
    return [*out, word]


class TookTooLong(Exception):
    pass


def _too_long(signum, frame):
    raise TookTooLong("still running after 120 s: the bad input was not caught before the work")


def _run(argv: list[str]) -> tuple[int, str, float]:
    """``histoxai ARGV`` in this process (or, with ``$HISTOXAI_PROBE_COLD``, in a new one,
    imports included): exit status, stderr and seconds to return."""
    if os.environ.get("HISTOXAI_PROBE_COLD"):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "histoxai.cli", *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        return done.returncode, done.stderr, time.perf_counter() - start
    err = io.StringIO()
    start = time.perf_counter()
    signal.signal(signal.SIGALRM, _too_long)
    signal.alarm(120)  # a probe that starts real work (or serves) is stopped, not waited for
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = cli.main(argv)
        except SystemExit as exit_:  # argparse
            rc = exit_.code if isinstance(exit_.code, int) else 1
        except Exception:  # a bug: keep its traceback for the assertion message
            traceback.print_exc()
            rc = 1
        finally:
            signal.alarm(0)
    return rc, err.getvalue(), time.perf_counter() - start
