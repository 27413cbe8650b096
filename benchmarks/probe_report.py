"""The probe set of issue 16 in numbers: how many bad inputs got one clear error line
(exit 2, naming the key or file, nothing written) and how fast.

Runs ``tests/ops/test_probes.py`` (a tiny real project is built first, ~2 min) and
summarises the per-probe log it writes. ``--cold`` runs every probe as a new
``histoxai`` process, so the seconds include Python's start and the imports a user waits
for; without it, probes run in one process (imports warm) and the seconds are the CLI's
own time to the error.

Run::

    .venv/bin/python benchmarks/probe_report.py            # warm, ~4 min on 2 busy cores
    .venv/bin/python benchmarks/probe_report.py --cold     # each probe a new process

Prints: N probes, N clear errors, the slowest probes, max and median seconds to the
error, and the ratio of the max to the 5 s budget ("within seconds": below 1 is within).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUDGET_S = 5.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cold", action="store_true", help="each probe in a new process")
    parser.add_argument("-k", default="", help="pytest -k expression (a subset of probes)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "probes.jsonl"
        env = {**os.environ, "HISTOXAI_PROBE_LOG": str(log)}
        if args.cold:
            env["HISTOXAI_PROBE_COLD"] = "1"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--tb=line", "-rf",
               str(REPO / "tests/ops/test_probes.py"), *(["-k", args.k] if args.k else [])]  # fmt: skip
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        failed = [line for line in done.stdout.splitlines() if line.startswith("FAILED")]
        rows = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    total = len(rows) + len(failed)
    print(
        f"probes: {total}; clear errors (exit 2, one line naming key or file, nothing written): {len(rows)}"
    )
    for line in failed:
        print(f"  not clear: {line}")
    if rows:
        seconds = sorted(r["seconds"] for r in rows)
        print(f"seconds to the error ({'new process each' if args.cold else 'in-process, imports warm'}): "
              f"median {statistics.median(seconds):.2f}, max {seconds[-1]:.2f}")  # fmt: skip
        for r in sorted(rows, key=lambda r: -r["seconds"])[:5]:
            print(f"  {r['seconds']:6.2f} s  {r['probe']}")
        print(f"max / {BUDGET_S:.0f} s budget: {seconds[-1] / BUDGET_S:.2f}")
    return 0 if not failed and done.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
