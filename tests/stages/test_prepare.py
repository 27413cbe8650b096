"""`histoxai prepare`: the store is swapped in whole, leftovers of killed runs are cleaned."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from histoxai.cli import main
from histoxai.data.store import PatchStore
from histoxai.io import clean_leftovers, output_lock

TINY = ["data.patch_size_px=16", "data.phantom.n_samples=2", "data.phantom.grid_vox=[4, 4]"]


def _args(root) -> list[str]:
    args = ["prepare"]
    for o in [f"base.patches_dir={root}", *TINY]:
        args += ["--set", o]
    return args


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def params(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("{}\n")
    return tmp_path


def test_leftovers_of_a_killed_run_are_removed_and_the_montage_is_inside(params):
    root = params / "data" / "patches"
    pid = _dead_pid()
    old = root.with_name(f".patches.old-{pid}")
    tmp = root.with_name(".patches.k3j2.tmp")
    for leftover in (old, tmp / "patches"):
        leftover.mkdir(parents=True)
        (leftover / "index.parquet").write_bytes(b"half")
    assert main(_args(root)) == 0
    assert not old.exists() and not tmp.exists()
    assert (root / "montage.png").is_file() and len(PatchStore(root)) == 32


def test_a_store_lost_between_the_two_renames_is_restored_then_replaced(params):
    root = params / "data" / "patches"
    assert main(_args(root)) == 0
    first = (root / "index.parquet").read_bytes()
    old = root.with_name(f".patches.old-{_dead_pid()}")
    os.replace(root, old)  # what a kill between atomic_path's two renames leaves
    clean_leftovers(root)
    assert (root / "index.parquet").read_bytes() == first and not old.exists()


def test_a_second_writer_is_refused_at_once(params, capsys):
    root = params / "data" / "patches"
    with output_lock(root):
        assert main(_args(root)) == 2
    assert "being written by another process" in capsys.readouterr().err
    assert not root.exists()
