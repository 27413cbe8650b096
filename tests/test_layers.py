"""The packages of histoxai form floors, and no import points back up; stages stay thin.

Each unit (a subpackage, or a top-level module of ``src/histoxai``) sits on a floor and
may import only units on lower floors. Imports inside functions count, and so do module
names in strings (``importlib`` registries such as the CLI's command table). Not imports:
a module named after ``-m`` in a command line (it starts another process) and a
``module:function`` setting such as ``tune.trainer`` (data; the unit that reads it
imports it). ``__main__.py`` files are entry points, on the top floor, above the CLI.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"histoxai": REPO / "src" / "histoxai", "tuning": REPO / "tuning", "dashboard": REPO / "dashboard"}

FLOORS: list[set[str]] = [
    {"__init__", "errors", "stain"},  # no histoxai imports
    {"io", "config"},
    {"data"},  # phantom, MICROMEN ingestion, the patch store
    {"models"},  # the regressor
    {"tracking"},  # MLflow: runs, params, the registry (which loads a Regressor)
    {"training"},  # fit loop, publishing to the registry, distributed groups
    {"explain"},  # saliency maps (sharded over training's process groups)
    {"evaluation", "xai_eval", "tuning", "dashboard"},  # reports, studies, the browser
    {"stages"},  # thin entry points: load config, call one library function, write outputs
    {"cli"},
    {"__main__"},  # python -m histoxai.dashboard: the CLI's dashboard command
]
FLOOR = {unit: i for i, units in enumerate(FLOORS) for unit in units}
_NAME = re.compile(r"histoxai(\.\w+)+")


def unit_of(path: Path) -> str:
    """The unit a source file belongs to."""
    if path.name == "__main__.py":
        return "__main__"
    for top, root in ROOTS.items():
        if path.is_relative_to(root):
            if top != "histoxai":
                return top
            first = path.relative_to(root).parts[0]
            return first.removesuffix(".py")
    raise ValueError(f"{path} is outside the packages")


def _exists(module: str) -> bool:
    parts = module.split(".")[1:]
    if parts and parts[0] in ("tuning", "dashboard"):
        base = ROOTS[parts[0]].joinpath(*parts[1:])
    else:
        base = ROOTS["histoxai"].joinpath(*parts)
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def referenced_units(source: str, package: str) -> list[tuple[int, str, str]]:
    """``(line, unit, module)`` of every histoxai module ``source`` imports or names.

    Args:
        source: Python source text.
        package: the dotted package the source lives in (resolves relative imports).
    """
    tree = ast.parse(source)
    after_m = {
        id(b)
        for node in ast.walk(tree)
        if isinstance(node, (ast.List, ast.Tuple))
        for a, b in zip(node.elts, node.elts[1:])
        if isinstance(a, ast.Constant) and a.value == "-m"
    }
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found += [(node.lineno, base)] if base != "histoxai" else []
            found += [(node.lineno, f"{base}.{a.name}") for a in node.names if base == "histoxai"]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in after_m:
            if _NAME.fullmatch(node.value) and _exists(node.value):
                found.append((node.lineno, node.value))
    out = []
    for line, module in found:
        parts = module.split(".")
        if parts[0] == "histoxai" and len(parts) > 1:
            out.append((line, parts[1], module))
    return out


def _package(path: Path) -> str:
    for top, root in ROOTS.items():
        if path.is_relative_to(root):
            prefix = ["histoxai"] if top == "histoxai" else ["histoxai", top]
            return ".".join([*prefix, *path.relative_to(root).parent.parts])
    raise ValueError(path)


def _sources() -> list[Path]:
    linked = {ROOTS["histoxai"] / "tuning", ROOTS["histoxai"] / "dashboard"}  # symlinks in a worktree
    return sorted(
        p
        for root in ROOTS.values()
        for p in root.rglob("*.py")
        if not any(p.is_relative_to(d) for d in linked)
    )


def upward_imports(path: Path) -> list[str]:
    """Imports in ``path`` that point to the same or a higher floor of another unit."""
    own = unit_of(path)
    bad = []
    for line, unit, module in referenced_units(path.read_text(), _package(path)):
        if unit != own and FLOOR.get(unit, len(FLOORS)) >= FLOOR[own]:
            bad.append(
                f"{path.relative_to(REPO)}:{line} ({own}, floor {FLOOR[own]}) imports {module} (floor {FLOOR.get(unit)})"
            )
    return bad


def test_every_unit_has_a_floor_and_every_floor_a_unit():
    units = {unit_of(p) for p in _sources()}
    assert units == set(FLOOR), (
        f"place new units on a floor: {units - set(FLOOR)}; gone: {set(FLOOR) - units}"
    )


def test_no_import_points_back_up():
    bad = [line for path in _sources() for line in upward_imports(path)]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize(
    "source, expected",
    [
        ("def f():\n    from histoxai.stain import hematoxylin\n", ["stain"]),
        ("from histoxai import training, data\n", ["training", "data"]),
        ("from ..training.fit import fit\n", ["training"]),
        ("CMD = ['python', '-m', 'histoxai.cli']\nTRAINER = 'histoxai.data.nuclei:count'\n", []),
        ("importlib.import_module('histoxai.data.nuclei')\n", ["data"]),
        ("TAG = 'histoxai.state'\n", []),  # not a module
    ],
)
def test_the_walk_sees_lazy_relative_and_string_imports(source, expected):
    assert [u for _, u, _ in referenced_units(source, "histoxai.models")] == expected


def test_an_arrow_back_up_is_reported(tmp_path, monkeypatch):
    fake = ROOTS["histoxai"] / "models" / "_probe.py"
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: "from histoxai.training import fit\n")
    assert upward_imports(fake) == [
        "src/histoxai/models/_probe.py:1 (models, floor 3) imports histoxai.training (floor 5)"
    ]


@pytest.mark.parametrize("path", sorted((ROOTS["histoxai"] / "stages").glob("*.py")), ids=lambda p: p.name)
def test_every_stage_is_thin(path):
    """A stage loads config, calls one library function and writes outputs: at most 80 lines."""
    assert len(path.read_text().splitlines()) <= 80, f"{path.name}: move library work into its package"
