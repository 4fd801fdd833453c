"""A staging folder for an extraction: written into first, merged into the target on success.

It lives inside the target (so moving its contents is a rename on the same file system) and is
named after the archive, the host and the process: a folder left by a process of this host that
died (killed, power cut) is removed by the next extraction of that archive instead of
lingering, gigabytes large.
"""

from __future__ import annotations

import errno
import glob
import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from imcap.processes import process_running

SUFFIX = ".extracting"


@contextmanager
def staging_folder(target: Path, name: str) -> Iterator[Path]:
    """A fresh folder in `target` for extracting archive `name`; removed afterwards."""
    prefix = f".{name}.{socket.gethostname()}."
    for folder in target.glob(f"{glob.escape(prefix)}*{SUFFIX}"):
        pid = folder.name[len(prefix):-len(SUFFIX)]
        if pid.isdigit() and not process_running(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
    staging = target / f"{prefix}{os.getpid()}{SUFFIX}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def merge_into(staging: Path, target: Path) -> None:
    """Move everything under `staging` into `target`, merging folders, replacing files.

    Every conflict (a folder where `target` has a file or a link, or the reverse) is found
    before anything moves, and raised as `FileExistsError`. A link in `target` is replaced or
    refused, never written through.
    """
    moves: list[tuple[Path, Path]] = []

    def plan(src: Path, dst: Path) -> None:
        for child in sorted(src.iterdir()):
            to = dst / child.name
            child_dir, to_dir = _real_dir(child), _real_dir(to)
            if child_dir and to_dir:
                plan(child, to)
            elif os.path.lexists(to) and (child_dir or to_dir):
                raise FileExistsError(errno.EEXIST, f"{to} is in the way of the archive's "
                                      f"{child.relative_to(staging)} (a folder and a non-folder)")
            else:
                moves.append((child, to))

    plan(staging, target)
    for src, dst in moves:
        os.replace(src, dst)


def _real_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()
