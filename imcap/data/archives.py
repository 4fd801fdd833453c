"""Archive extraction that stays in its target and writes nothing unless it all succeeds.

Every selected entry is checked before anything is written, and paths are resolved against the
links the archive itself creates, the way the file system will follow them: a chain such as
`d -> .`, `u -> d/..` is seen for what it is, so no entry, symlink or hard link lands or points
outside the target. Entries are written into a staging folder inside the target and moved into
place only once all of them are written; an aborted extraction leaves nothing behind.

Errors say what they prove: `CorruptArchiveError` (a truncated or damaged archive: deleting it
is safe) or `ArchiveError` for the rest (an entry escaping, a missing member, a full disk: the
archive may be fine and must be kept).
"""

from __future__ import annotations

import errno
import lzma
import os
import re
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from imcap.data.linktree import LinkTree, Parts
from imcap.data.staging import merge_into, staging_folder

CHUNK = 1 << 20
# Raised while reading a damaged archive (with OSErrors that have no errno: `_read_failure`).
_DAMAGE = (zipfile.BadZipFile, tarfile.TarError, zlib.error, lzma.LZMAError, EOFError)


class ArchiveError(RuntimeError):
    """An archive cannot be extracted; names the file and the entry. The archive may be fine."""


class CorruptArchiveError(ArchiveError):
    """The archive itself is truncated or damaged: downloading it again is the remedy."""


@dataclass(frozen=True)
class _Entry:
    name: str
    kind: str  # dir | file | symlink | hardlink | special (a device or fifo: refused)
    link: str = ""
    reader: Callable[[], IO[bytes]] | None = None  # opens a file's bytes


def extract(archive: Path, target: Path, members: Sequence[str] | None = None) -> list[Path]:
    """Extract a zip or tar(.gz/.bz2/.xz) `archive` into `target`; return the files written.

    `members` restricts extraction to those entries: exact names, or directories (every entry
    below them). Folders already in `target` are merged with the archive's; a file of the
    archive replaces one of the same name.
    """
    archive, target = Path(archive), Path(target)
    if not archive.is_file():
        raise ArchiveError(f"{archive}: no such archive")
    if zipfile.is_zipfile(archive):
        opener = _zip_entries
    elif _is_tar(archive):
        opener = _tar_entries
    else:
        raise CorruptArchiveError(f"{archive}: not a zip or tar archive (or truncated)")
    target.mkdir(parents=True, exist_ok=True)
    with staging_folder(target, archive.name) as staging:
        with opener(archive) as entries:
            written = _write(archive, target, staging, _select(archive, entries, members))
        try:
            merge_into(staging, target)
        except OSError as err:
            raise ArchiveError(f"{archive}: cannot move the extracted files into {target} "
                               f"({err}); the archive is kept") from err
    return [target.joinpath(*parts) for parts in written]


def _is_tar(archive: Path) -> bool:
    try:
        return tarfile.is_tarfile(archive)
    except (OSError, EOFError, zlib.error):
        return False


@contextmanager
def _zip_entries(archive: Path) -> Iterator[list[_Entry]]:
    """zipfile writes symlink entries as plain files holding the link text: all are files."""
    try:
        zf = zipfile.ZipFile(archive)
    except (*_DAMAGE, OSError) as err:
        raise _read_failure(archive, "the archive", err) from err
    with zf:
        yield [_Entry(i.filename, "dir" if i.is_dir() else "file",
                      reader=lambda i=i: zf.open(i)) for i in zf.infolist()]


@contextmanager
def _tar_entries(archive: Path) -> Iterator[list[_Entry]]:
    with tarfile.open(archive) as tf:  # `_is_tar` has opened it once already
        try:
            infos = tf.getmembers()  # reads the whole index: a truncated archive fails here
        except (*_DAMAGE, OSError) as err:
            raise _read_failure(archive, "the archive", err) from err
        entries = []
        for info in infos:
            if info.isdir():
                entries.append(_Entry(info.name, "dir"))
            elif info.isfile():
                entries.append(_Entry(info.name, "file", reader=lambda i=info: tf.extractfile(i)))
            elif info.issym() or info.islnk():
                entries.append(_Entry(info.name, "symlink" if info.issym() else "hardlink",
                                      info.linkname))
            else:
                entries.append(_Entry(info.name, "special"))
        yield entries


def _select(archive: Path, entries: list[_Entry], members: Sequence[str] | None) -> list[_Entry]:
    if members is None:
        return entries
    names = [e.name for e in entries]
    chosen: set[str] = set()
    for member in members:
        prefix = member.rstrip("/") + "/"
        hits = [n for n in names if n == member or n.rstrip("/") + "/" == prefix
                or n.startswith(prefix)]
        if not hits:
            raise ArchiveError(f"{archive}: no member {member!r} (it holds e.g. {names[:5]})")
        chosen.update(hits)
    return [e for e in entries if e.name in chosen]


def _entry_parts(archive: Path, target: Path, name: str) -> Parts:
    """The components of entry `name`; `ArchiveError` if absolute or climbing with `..`."""
    posix = name.replace("\\", "/")
    parts = tuple(p for p in posix.split("/") if p not in ("", "."))
    if posix.startswith("/") or re.match(r"[A-Za-z]:", posix) or ".." in parts:
        raise ArchiveError(f"{archive}: entry {name!r} would be written outside {target}")
    return parts


def _plan(archive: Path, target: Path, entries: list[_Entry]) -> list[tuple[_Entry, Parts, Parts]]:
    """(entry, where it lands, what a hard link links to) for every entry, all checked first."""
    tree, plan = LinkTree(), []
    for entry in entries:
        parts = _entry_parts(archive, target, entry.name)
        if entry.kind == "special":
            raise ArchiveError(f"{archive}: entry {entry.name!r} is a device or fifo")
        if not parts:  # `./`: the target itself
            continue
        parent = tree.resolve(parts[:-1])
        if parent is None:
            raise ArchiveError(f"{archive}: entry {entry.name!r} would be written outside "
                               f"{target} (through a link)")
        where, source = (*parent, parts[-1]), ()
        if entry.kind == "symlink":
            if entry.link.startswith("/") or tree.resolve(entry.link.split("/"), parent) is None:
                raise ArchiveError(f"{archive}: entry {entry.name!r} links outside {target} "
                                   f"(to {entry.link!r})")
        elif entry.kind == "hardlink":  # named relative to the archive's root
            source = tree.resolve(entry.link.split("/"))
            if entry.link.startswith("/") or source is None:
                raise ArchiveError(f"{archive}: entry {entry.name!r} links outside {target} "
                                   f"(to {entry.link!r})")
            if not tree.is_file(source):
                raise ArchiveError(f"{archive}: entry {entry.name!r} is a hard link to "
                                   f"{entry.link!r}, which is not a file extracted before it")
        tree.add(where, entry.kind, entry.link)
        plan.append((entry, where, source))
    return plan


def _write(archive: Path, target: Path, staging: Path, entries: list[_Entry]) -> list[Parts]:
    """Write the checked entries under `staging`; the places of the files and links written."""
    written: dict[Parts, None] = {}  # ordered, once each
    for entry, where, source in _plan(archive, target, entries):
        path = staging.joinpath(*where)
        try:
            if entry.kind == "dir":
                if path.is_symlink() or path.is_file():
                    path.unlink()
                path.mkdir(parents=True, exist_ok=True)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            if os.path.lexists(path):
                path.unlink()
            if entry.kind == "symlink":
                path.symlink_to(entry.link)
            elif entry.kind == "hardlink":
                os.link(staging.joinpath(*source), path)
            else:
                _copy(archive, entry, path)
        except OSError as err:
            raise _write_error(archive, target, entry.name, err) from err
        written[where] = None
    return list(written)


def _copy(archive: Path, entry: _Entry, path: Path) -> None:
    """An entry's bytes into `path`. A read error is the archive's (`_read_failure`); a write
    error (a full disk) is raised as the OSError it is."""
    what = f"entry {entry.name!r}"
    try:
        stream = entry.reader()
    except (*_DAMAGE, OSError) as err:
        raise _read_failure(archive, what, err) from err
    with stream, open(path, "wb") as out:
        while True:
            try:
                chunk = stream.read(CHUNK)
            except (*_DAMAGE, OSError) as err:
                raise _read_failure(archive, what, err) from err
            if not chunk:
                return
            out.write(chunk)


def _read_failure(archive: Path, what: str, err: BaseException) -> ArchiveError:
    """Damaged data proves the archive corrupt (gzip and bz2 raise OSErrors without an errno);
    an I/O error of the disk (an errno) does not."""
    if isinstance(err, OSError) and err.errno is not None:
        return ArchiveError(f"{archive}: cannot read {what} ({err}); the archive is kept")
    return CorruptArchiveError(f"{archive}: {what} is corrupt or truncated ({err})")


def _write_error(archive: Path, target: Path, name: str, err: OSError) -> ArchiveError:
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return ArchiveError(f"{archive}: no space left on device writing entry {name!r} into "
                            f"{target}; the archive is kept: free some space and run again")
    return ArchiveError(f"{archive}: cannot write entry {name!r} into {target} ({err}); "
                        "the archive is kept")
