"""The installed distribution: histoxai's tuning/ and dashboard/ folders install as
``histoxai.tuning`` and ``histoxai.dashboard`` (no generic top-level names in site-packages)."""

from __future__ import annotations

import subprocess
import sys


def _python(code: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_tuning_and_dashboard_are_namespaced_under_histoxai(tmp_path):
    ok = _python(
        "import histoxai.dashboard, histoxai.tuning, importlib.resources as r; "
        "print(sorted(p.name for p in r.files('histoxai.tuning').joinpath('spaces').iterdir()))",
        tmp_path,  # outside the repo: only what is installed can be imported
    )
    assert ok.returncode == 0, ok.stderr
    assert "thesis.yaml" in ok.stdout
    for name in ("dashboard", "tuning"):
        bare = _python(f"import {name}", tmp_path)
        assert bare.returncode != 0 and "No module named" in bare.stderr, name
