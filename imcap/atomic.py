"""Atomic outputs: write to a temporary name beside the target, then rename over it.

A stage killed half-way must never leave a partial file under its final name, where DVC would
cache it as a good output. `os.replace` is atomic within one filesystem, hence the temporary
path in the target's own directory.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed to `target`, else removed.

    Works for a file or a directory written at the yielded path.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    staged = tmp / target.name
    try:
        yield staged
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(staged, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(target: str | Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def write_json(target: str | Path, data: Any) -> None:
    write_text(target, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
