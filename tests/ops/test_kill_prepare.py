"""SIGKILL `histoxai prepare` at each write window: the previous store still opens (it
verifies itself), and the next run removes the leftovers."""

from __future__ import annotations

import pytest

from histoxai.data.store import PatchStore
from histoxai.io import output_lock
from tests.ops.conftest import histoxai, killed, start

pytestmark = pytest.mark.slow

WINDOWS = {
    # (function wrapped, before/after, which call): the store the kill must leave
    "writing the second sample": (("numpy:save", "before"), 3, "previous"),
    "store written, montage not yet": (("histoxai.data.phantom:save_montage", "before"), 1, "previous"),
    "montage written, before the swap": (("histoxai.data.phantom:save_montage", "after"), 1, "previous"),
    "swapped, old store not yet deleted": (("histoxai.io:_exchange", "after"), 1, "new"),
}


def _fingerprint(root) -> bytes:
    assert len(PatchStore(root)) == 72  # opens only if every file is intact
    assert (root / "montage.png").is_file()
    return (root / "index.parquet").read_bytes()


@pytest.mark.parametrize("window", list(WINDOWS))
def test_a_killed_prepare_leaves_a_store_that_opens(project, window):
    root = project / "data" / "patches"
    assert histoxai(project, "prepare").returncode == 0
    previous = _fingerprint(root)
    kill, nth, expected = WINDOWS[window]
    done = histoxai(project, "prepare", "--set", "base.seed=1", kill=kill, nth=nth)
    assert killed(done), done.stderr[-2000:]
    after = _fingerprint(root)
    assert (after == previous) == (expected == "previous")
    done = histoxai(project, "prepare", "--set", "base.seed=1")  # the next run cleans up
    assert done.returncode == 0, done.stderr[-2000:]
    assert _fingerprint(root) != previous
    assert sorted(p.name for p in root.parent.iterdir()) == [".patches.lock", "patches"]


def test_two_prepares_on_one_store_never_mix(project):
    root = project / "data" / "patches"
    procs = [start(project, "prepare", "--set", f"base.seed={seed}") for seed in (0, 1)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert sorted(rc for rc, _ in results) in ([0, 0], [0, 2]), results  # one after the other, or refused
    assert all("being written by another process" in err for rc, err in results if rc == 2)
    _fingerprint(root)
    assert sorted(p.name for p in root.parent.iterdir()) == [".patches.lock", "patches"]


def test_a_prepare_while_another_holds_the_store_is_refused_at_once(project):
    root = project / "data" / "patches"
    assert histoxai(project, "prepare").returncode == 0
    before = _fingerprint(root)
    with output_lock(root):  # a writer in progress
        done = histoxai(project, "prepare", "--set", "base.seed=1")
    assert done.returncode == 2 and "is being written by another process" in done.stderr
    assert _fingerprint(root) == before
