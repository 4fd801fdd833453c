"""`dvc.yaml` deps cover exactly the code each stage runs: an edit to any module a stage imports
(transitively, inside this repository) reruns that stage, and an edit elsewhere does not.

A missing dep is the one thing a DVC pipeline must never have: `dvc repro` would call stale
results up to date. An extra one reruns work for nothing (on COCO, an hour of features).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
OWN_PACKAGES = ("imcap", "stages")


def module_file(name: str) -> Path | None:
    path = REPO.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Every module of this repository `path` imports, at module level or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name.split(".")[0] in OWN_PACKAGES}


def stage_sources(entry: str) -> set[str]:
    """The repository files that `python -m <entry>` executes, relative to the repo root."""
    seen: set[Path] = set()
    todo = [entry]
    while todo:
        name = todo.pop()
        path = module_file(name)
        if path is None or path in seen:
            continue
        seen.add(path)
        todo.extend(imported_modules(path))
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages
    return {str(p.relative_to(REPO)) for p in seen}


def dvc_stages() -> dict[str, dict]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", list(dvc_stages()))
def test_stage_deps_are_exactly_the_code_it_runs(stage):
    spec = dvc_stages()[stage]
    entry = spec["cmd"].split("python -m ", 1)[1].split()[0]
    listed = {str(dep) for dep in spec["deps"] if str(dep).startswith(OWN_PACKAGES)}
    runs = stage_sources(entry)
    assert not runs - listed, f"{stage}: dvc.yaml misses deps {sorted(runs - listed)}"
    assert not listed - runs, f"{stage}: dvc.yaml lists deps it never runs {sorted(listed - runs)}"


def test_package_inits_are_deps_of_the_stages_that_import_them():
    """Importing `imcap.x` runs `imcap/__init__.py`: an edit there (code added to a
    docstring-only file) must rerun the stage, so every executed `__init__.py` is a dep."""
    evaluate = {str(dep) for dep in dvc_stages()["evaluate"]["deps"]}
    assert {"imcap/__init__.py", "imcap/model/__init__.py"} <= evaluate
