"""The repository files a module runs, and their digests: what a stage's results depend on.

`stage_sources("stages.train")` follows the module's imports inside this repository, at module
level and inside functions, read from the source (nothing is imported), transitively, with the
packages on the way (importing `imcap.x.y` runs `imcap/__init__.py` and `imcap/x/__init__.py`).
That is the set `dvc.yaml` lists as the stage's code deps (`tests/test_dvc_deps.py` checks it),
found without `dvc.yaml`: the train stage's resume state belongs to the digests of these files.
"""

from __future__ import annotations

import ast
import hashlib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OWN_PACKAGES = ("imcap", "stages")


def module_file(name: str, root: Path = REPO) -> Path | None:
    """The file of module `name` under `root`, or None (not a module of this repository)."""
    path = root.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path, name: str) -> set[str]:
    """The modules of this repository that module `name` (file `path`) imports, anywhere in it;
    `from a import b` counts both `a` and `a.b` (`b` may be a module)."""
    return {n for n in all_imports(path, name) if n.split(".")[0] in OWN_PACKAGES}


def all_imports(path: Path, name: str) -> set[str]:
    """Every module name that module `name` (file `path`) imports, anywhere in it, as
    `imported_modules` counts them."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, `level - 1` packages up
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([base] if base else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def stage_sources(entry: str, root: Path = REPO) -> list[str]:
    """The files (relative to `root`, sorted) that `python -m <entry>` runs from this
    repository."""
    seen: set[Path] = set()
    todo = [entry]
    while todo:
        name = todo.pop()
        path = module_file(name, root)
        if path is None or path in seen:
            continue
        seen.add(path)
        todo.extend(imported_modules(path, name))
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages
    return sorted(p.relative_to(root).as_posix() for p in seen)


def third_party_imports(entry: str, root: Path = REPO) -> set[str]:
    """The top-level names of the modules from outside this repository and the standard
    library that the files `stage_sources` finds import (`torch`, `h5py`, ...)."""
    names = {name.split(".")[0] for file in stage_sources(entry, root)
             for name in all_imports(root / file, _module_name(file))}
    return {name for name in names - set(OWN_PACKAGES)
            if name and name not in sys.stdlib_module_names and name != "__future__"}


def _module_name(file: str) -> str:
    """`imcap/x/__init__.py` -> `imcap.x`, `imcap/x/y.py` -> `imcap.x.y`."""
    return file.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def source_digests(entry: str, root: Path = REPO) -> dict[str, str]:
    """SHA-256 of each file `stage_sources` finds, by its path relative to `root`."""
    return {name: hashlib.sha256((root / name).read_bytes()).hexdigest()
            for name in stage_sources(entry, root)}
