"""``dvc metrics show`` of this pipeline fits a 120-column terminal.

The metric files are written where ``dvc.yaml`` declares them, one per model and target,
with the keys the report writers use and the widest values they can hold (negative
numbers at 3 decimals, the longest method name of ``params.yaml`` as an ``|abs`` row);
real ``dvc`` prints the table.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from histoxai.evaluation.report import HEADLINE
from histoxai.xai_eval.relevance import ABS_SUFFIX
from histoxai.xai_eval.report import HEADLINE_STATS

DVC = str(Path(sys.executable).parent / "dvc")  # the venv's, whether or not on PATH
WIDTH = 130  # the widest xai_eval row: a 19-character method name at 128x128, every number negative


def _metrics_dirs(dvc_yaml: dict) -> dict[str, str]:
    """``{stage: declared metrics path with ${key}}`` of the per-model stages."""
    out = {}
    for name, stage in dvc_yaml["stages"].items():
        for entry in stage.get("do", stage).get("metrics", []):
            out[name] = next(iter(entry)) if isinstance(entry, dict) else entry
    return out


def _longest_method(params: dict) -> str:
    names = [m if isinstance(m, str) else m.get("name", m["method"]) for m in params["explain"]["methods"]]
    return max(names, key=len) + ABS_SUFFIX


def test_dvc_metrics_show_fits_130_columns(tmp_path, repo_root):
    dvc_yaml = yaml.safe_load((repo_root / "dvc.yaml").read_text())
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    declared = _metrics_dirs(dvc_yaml)
    assert set(declared) == {"evaluate", "xai_eval"}, declared
    assert all(p.endswith("/metrics") for p in declared.values())  # a folder: one file per target
    rows = {
        "evaluate": dict.fromkeys(HEADLINE, -0.123),
        "xai_eval": {
            "top": _longest_method(params),
            "res": "128x128",
            **dict.fromkeys(HEADLINE_STATS, -0.123),
        },
    }
    for key, model in dvc_yaml["vars"][0]["models"].items():
        for stage, folder in declared.items():
            for target in yaml.safe_load(model["targets"]):
                path = tmp_path / folder.replace("${key}", key) / f"{target}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(rows[stage]))
    shutil.copy(repo_root / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copy(repo_root / "params.yaml", tmp_path / "params.yaml")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([DVC, "init", "-q"], cwd=tmp_path, check=True)
    shown = subprocess.run(
        [DVC, "metrics", "show"], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert len(shown) == 1 + 2 * sum(
        len(yaml.safe_load(m["targets"])) for m in dvc_yaml["vars"][0]["models"].values()
    )
    assert "reports/xai_eval/histoxai-mdfa/metrics/md.json" in "\n".join(shown)
    too_wide = [line for line in shown if len(line) > WIDTH]
    assert not too_wide, "\n".join(shown)
