"""Atomic outputs: write to a temporary name beside the target, then rename over it.

A stage killed half-way must never leave a partial file under its final name, where DVC would
cache it as a good output. `os.replace` is atomic within one filesystem, hence the temporary
path in the target's own directory: a folder `.<target>.<host>.<pid>.<random>.tmp`. A writer
killed before it could remove that folder leaves it behind; the next write of the same target
removes it once that process is gone (only folders of this host: another machine sharing the
disk may still be using its own).

A write that runs out of disk space (or quota) is one line naming the output and the space
left (`DiskFullError`), not the library's traceback; its temporary goes with it.

An existing directory is replaced only when the caller says it is its own output
(`replace_dir=True`, e.g. a stage's output folder): anything else at that name may be the
user's, and is never deleted.

Every stage starts with `prepare_outputs`: the folders its outputs go to must take a new file
(checked before any work: a stage that cannot write its model should not find out after
training it), and the temporaries killed writers left anywhere under `data/`, `metrics/` and
`.imcap/` are removed — also those of stages that DVC restores from its cache and never reruns.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from imcap.processes import process_running

# Where stages write (relative to the repository root), swept for stale temporaries.
OUTPUT_ROOTS = (Path("data"), Path("metrics"), Path(".imcap"))


class TargetIsDirectoryError(IsADirectoryError):
    """The target is a directory that the caller did not declare its own output."""


class FolderNotWritableError(PermissionError):
    """An output folder that cannot take a new file; the message names it."""


class DiskFullError(OSError):
    """No space left to write the output `path`; the message names it and the space left."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


def prepare_outputs(*outputs: str | Path) -> None:
    """Before a stage's work: remove stale temporaries (`remove_stale_temporaries_under`), and
    check that the folder of each output (where its temporary goes) exists or can be made and
    takes a new file; else `FolderNotWritableError` naming the folder."""
    remove_stale_temporaries_under(*OUTPUT_ROOTS)
    for folder in dict.fromkeys(Path(output).parent for output in outputs):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            descriptor, probe = tempfile.mkstemp(prefix=".imcap-write-check.", dir=folder)
            os.close(descriptor)
            os.unlink(probe)
        except OSError as err:
            where = next((p for p in (folder, *folder.parents) if p.exists()), folder)
            raise FolderNotWritableError(
                f"{where}: cannot write there ({err.strerror or err}); make it writable "
                f"(chmod u+w {where}) and rerun") from None


def remove_stale_temporaries_under(*roots: str | Path) -> list[Path]:
    """The temporary folders of killed writers (on this host) in `roots` and their
    subfolders (one level down: `data/.dataset.*.tmp`, `data/vocab/.vocab.json.*.tmp`),
    removed; returns them."""
    pattern = re.compile(r"\..+\." + re.escape(socket.gethostname()) + r"\.(\d+)\.\w+\.tmp")
    stale = []
    for root in map(Path, roots):
        for folder in (root, *_subfolders(root)):
            stale += [entry for entry in _entries(folder)
                      if (match := pattern.fullmatch(entry.name)) and entry.is_dir()
                      and not entry.is_symlink() and not process_running(int(match[1]))]
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)
    return stale


def _entries(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError:  # missing, or not a readable folder: nothing of ours to sweep
        return []


def _subfolders(folder: Path) -> list[Path]:
    return [entry for entry in _entries(folder)
            if entry.is_dir() and not entry.is_symlink() and not entry.name.endswith(".tmp")]


@contextmanager
def atomic_path(target: str | Path, *, replace_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed to `target`, else removed.

    Works for a file or a directory written at the yielded path. A directory already at
    `target` is replaced by the new one with `replace_dir=True`; otherwise, or when a file
    would replace it, `TargetIsDirectoryError` (before any work, if it is there at the start).
    """
    target = Path(target)
    if not replace_dir:
        _refuse_directory(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_owner_prefix(target)}{os.getpid()}.", suffix=".tmp",
                                dir=target.parent))
    staged = tmp / target.name
    try:
        yield staged
        if target.is_dir() and not target.is_symlink():
            if not (replace_dir and staged.is_dir()):
                _refuse_directory(target)
            # Moved aside, not deleted in place: a kill now cannot leave half of it under its
            # name; it goes with the temporary folder.
            os.replace(target, tmp / f"{target.name}.replaced")
        os.replace(staged, target)
    except OSError as err:
        if not _out_of_space_in(tmp, err):
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # first: the space left counts it freed
        raise DiskFullError(f"{target}: no space left on the device "
                            f"({_free_space(target.parent)} free there); free some and rerun",
                            target) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _out_of_space_in(tmp: Path, err: OSError) -> bool:
    """Whether `err` is the disk running full while writing into `tmp` (also where a nested
    `atomic_path` there already said so: the outer target is the one to name)."""
    if isinstance(err, DiskFullError):
        return tmp in err.path.parents
    return err.errno in (errno.ENOSPC, errno.EDQUOT)


def _free_space(folder: Path) -> str:
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "unknown"
    return f"{free / 1e9:.1f} GB" if free >= 1e9 else f"{free / 1e6:.1f} MB"


def remove_stale_temporaries(target: str | Path) -> list[Path]:
    """Remove the temporary folders of `target` whose writer (on this host) has exited;
    returns them."""
    target = Path(target)
    pattern = re.compile(re.escape(_owner_prefix(target)) + r"(\d+)\.\w+\.tmp")
    stale = [entry for entry in target.parent.iterdir()
             if (match := pattern.fullmatch(entry.name)) and entry.is_dir()
             and not entry.is_symlink() and not process_running(int(match[1]))]
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)
    return stale


def _owner_prefix(target: Path) -> str:
    return f".{target.name}.{socket.gethostname()}."


def _refuse_directory(target: Path) -> None:
    if target.is_dir() and not target.is_symlink():
        raise TargetIsDirectoryError(f"{target}: is a directory; not replacing it with an "
                                     "output (remove it, or choose another name)")


def write_text(target: str | Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def write_json(target: str | Path, data: Any) -> None:
    write_text(target, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
