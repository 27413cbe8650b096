"""``params.yaml`` and ``dvc.yaml`` (and ``thesis/dvc.yaml``) tell DVC everything that changes a result.

- every config key has its value in ``params.yaml`` (a default living only in
  ``config.py`` would change results without ``dvc status`` noticing);
- every module a stage's command runs (its import graph, imports inside functions and
  ``importlib`` strings included) is a ``deps`` entry of that stage.
"""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import pytest
import yaml

from histoxai.cli import COMMANDS
from histoxai.config import Config, flatten, load_config

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"histoxai": REPO / "src" / "histoxai", "tuning": REPO / "tuning", "dashboard": REPO / "dashboard"}
NOT_RESULTS = {"src/histoxai/cli.py"}  # argument parsing and dispatch only


def test_every_config_key_is_in_params_yaml():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())

    def has(key: str) -> bool:
        node = raw
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    missing = [k for k in flatten(Config()) if not has(k)]
    assert not missing, f"params.yaml lacks {missing}: add each with its default and a comment"
    assert flatten(load_config(REPO / "params.yaml")) == flatten(load_config(REPO / "params.yaml", ()))


def test_every_models_overrides_in_dvc_yaml_are_valid_params():
    """The per-model ``overrides`` of dvc.yaml's train stage are validated only when the
    stage runs; a typo there would surface an hour into ``make demo``."""
    models = yaml.safe_load((REPO / "dvc.yaml").read_text())["vars"][0]["models"]
    built = {}
    for key, model in models.items():
        assert set(model) == {"targets", "overrides"}, key
        overrides = [f"model.targets={model['targets']}", *shlex.split(model["overrides"])]
        built[key] = load_config(REPO / "params.yaml", overrides).model
    cc = built["cc"]
    assert cc.targets == ("cc",) and (cc.input_scale, cc.output_stride) == (2.0, 8)  # 32x32 at 128 px
    assert (built["mdfa"].input_scale, built["mdfa"].output_stride) == (1.0, 0)


# pyproject's package-dir: histoxai.tuning is tuning/ (src/histoxai/tuning is only a local symlink)
PACKAGE_DIRS = {"histoxai.tuning": REPO / "tuning", "histoxai.dashboard": REPO / "dashboard"}


def _module_file(name: str) -> Path | None:
    top, *rest = name.split(".")
    if top not in ROOTS:
        return None
    base = ROOTS[top].joinpath(*rest)
    for package, folder in PACKAGE_DIRS.items():
        if f"{name}.".startswith(f"{package}."):
            base = folder.joinpath(*name.split(".")[2:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(REPO / ("src" if "src" in path.parts else "")).with_suffix("").parts)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level)[0]
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import module`
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if re.fullmatch(r"(histoxai|tuning|dashboard)(\.\w+)+", node.value):
                names.add(node.value)  # importlib.import_module("histoxai.data.nuclei")
    # importing a.b.c runs a/__init__.py and a/b/__init__.py too
    return {".".join(n.split(".")[: i + 1]) for n in names for i in range(n.count(".") + 1)}


def reached(module: str) -> set[str]:
    """Repo files (relative paths) that running ``module`` may execute."""
    seen: set[Path] = set()
    todo = [module, "histoxai.config"]
    while todo:
        path = _module_file(todo.pop())
        if path is None or path in seen:
            continue
        seen.add(path)
        if path.relative_to(REPO).as_posix() not in NOT_RESULTS:  # `python -m histoxai.cli tune`
            todo.extend(_imports(path))  # runs the tune stage, not every command cli.py names
    return {p.relative_to(REPO).as_posix() for p in seen}


# the phantom pipeline, the thesis' (wdir: ..) and the opt-in study -> champion one (wdir: ../..)
PIPELINES = ("dvc.yaml", "thesis/dvc.yaml", "pipelines/tune/dvc.yaml")


def _stages() -> list[tuple[str, dict]]:
    out = []
    for file in PIPELINES:
        stages = yaml.safe_load((REPO / file).read_text())["stages"]
        out += [(f"{file}:{name}", s.get("do", s)) for name, s in stages.items()]
    return out


@pytest.mark.parametrize("name, stage", _stages(), ids=[n for n, _ in _stages()])
def test_every_module_a_stage_runs_is_a_dependency(name, stage):
    command = stage["cmd"].split()[1]
    deps = [d for d in stage["deps"] if isinstance(d, str)]
    files = reached(COMMANDS[command][0]) - NOT_RESULTS
    uncovered = sorted(f for f in files if not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps))
    assert not uncovered, f"stage {name!r} runs {uncovered} but does not list them in deps"


def test_the_import_walk_sees_importlib_strings():
    # the classical baseline loads the nuclei detector through importlib
    assert "src/histoxai/data/nuclei.py" in reached("histoxai.stages.evaluate")
