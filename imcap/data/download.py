"""HTTP downloads that resume and land atomically; archive extraction that stays in its target.

A download streams into `<dest>.part`, resumes an existing `.part` with an HTTP Range request, is
checked against a sha256 when one is given, and only then is renamed to `dest`: a file under its
final name is always complete. Extraction validates every entry before writing anything, so a
path-traversal entry (`../x`, `/etc/x`, a symlink pointing out) aborts with nothing written.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import re
import tarfile
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath
from urllib.error import HTTPError, URLError
from urllib.parse import unquote, urlsplit
from urllib.request import Request, urlopen

from tqdm import tqdm

CHUNK = 1 << 20
TIMEOUT_S = 60
ATTEMPTS = 3  # an interrupted transfer is resumed this many times within one call
_LOCAL_ERRNOS = {errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EDQUOT}
_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(\d+|\*)")


class DownloadError(RuntimeError):
    """An HTTP failure, an interrupted transfer or a checksum mismatch; names the URL and file."""


class ArchiveError(RuntimeError):
    """A corrupt archive, an entry escaping the target, a missing member; names file and entry."""


def cache_dir() -> Path:
    """Where downloads land: `$IMCAP_CACHE`, else `~/.cache/imcap` (outside any DVC output)."""
    return Path(os.environ.get("IMCAP_CACHE") or Path.home() / ".cache" / "imcap")


def fetch(url: str, sha256: str | None = None) -> Path:
    """Download `url` into `cache_dir()/<file name from the URL>` unless it is already there."""
    name = unquote(PurePosixPath(urlsplit(url).path).name)
    if not name:
        raise DownloadError(f"{url}: the URL names no file")
    return download(url, cache_dir() / name, sha256=sha256)


def download(url: str, dest: Path, sha256: str | None = None, progress: bool = True) -> Path:
    """Download `url` to `dest` (atomically, resuming `dest.part`), verifying `sha256` if given.

    An existing `dest` is returned without touching the network when it matches `sha256` (or no
    hash is given); one that does not match is downloaded again.
    """
    dest = Path(dest)
    expected = sha256.lower() if sha256 else None
    if dest.is_file() and (expected is None or file_sha256(dest) == expected):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(1, ATTEMPTS + 1):
        try:
            _transfer(url, part, progress)
            break
        except (OSError, http.client.HTTPException, _Interrupted) as err:
            if isinstance(err, OSError) and err.errno in _LOCAL_ERRNOS:  # not worth retrying
                raise DownloadError(f"{url}: cannot write {part} ({err})") from err
            if isinstance(err, HTTPError) or (attempt == ATTEMPTS and isinstance(err, URLError)):
                raise DownloadError(f"{url}: {_describe(err)}") from err
            if attempt == ATTEMPTS:
                raise DownloadError(
                    f"{url}: transfer interrupted ({_describe(err)}); {part} keeps "
                    f"{_size(part)} bytes, run again to resume"
                ) from err
    if expected is not None:
        actual = file_sha256(part)
        if actual != expected:
            part.unlink()
            raise DownloadError(
                f"{url}: sha256 mismatch for {dest}: expected {expected}, got {actual}"
            )
    os.replace(part, dest)
    return dest


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class _Interrupted(Exception):
    """The server closed the connection before sending all the bytes it announced."""


def _transfer(url: str, part: Path, progress: bool) -> None:
    """Append the rest of `url` to `part` (or rewrite it if the server ignores Range)."""
    offset = _size(part)
    request = Request(url, headers={"User-Agent": "imcap"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urlopen(request, timeout=TIMEOUT_S)
    except HTTPError as err:
        if err.code == 416 and offset:  # nothing left to send: `part` may already be complete
            match = re.fullmatch(r"bytes \*/(\d+)", err.headers.get("Content-Range", ""))
            if match and int(match.group(1)) == offset:
                return
            part.unlink()  # stale partial file from another version: start over
            return _transfer(url, part, progress)
        raise
    with response:
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        resumed = response.status == 206 and match is not None and int(match.group(1)) == offset
        if not resumed:
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        received = offset
        with open(part, "ab" if resumed else "wb") as out, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
            desc=part.name.removesuffix(".part"), disable=not progress, leave=False,
        ) as bar:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if total is not None and received < total:
        raise _Interrupted(f"connection closed after {received} of {total} bytes")


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _describe(err: BaseException) -> str:
    if isinstance(err, HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, URLError):
        return f"cannot connect ({err.reason})"
    return str(err) or type(err).__name__


def extract(archive: Path, target: Path, members: Sequence[str] | None = None) -> list[Path]:
    """Extract a zip or tar(.gz/.bz2/.xz) `archive` into `target`; return the files written.

    `members` restricts extraction to those entries: exact names, or directories (every entry
    below them). Every selected entry is checked before anything is written; each file is written
    under a temporary name and renamed, so an interrupted extraction leaves no half file.
    """
    archive, target = Path(archive), Path(target)
    if not archive.is_file():
        raise ArchiveError(f"{archive}: no such archive")
    try:
        if zipfile.is_zipfile(archive):
            return _extract_zip(archive, target, members)
        if _is_tar(archive):
            return _extract_tar(archive, target, members)
    except (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError) as err:
        raise ArchiveError(f"{archive}: corrupt or truncated archive ({err})") from err
    raise ArchiveError(f"{archive}: not a zip or tar archive (or truncated)")


def _is_tar(archive: Path) -> bool:
    try:
        return tarfile.is_tarfile(archive)
    except (OSError, EOFError, zlib.error):
        return False


def _select(archive: Path, names: Iterable[str], members: Sequence[str] | None) -> set[str]:
    names = list(names)
    if members is None:
        return set(names)
    chosen = set()
    for member in members:
        prefix = member.rstrip("/") + "/"
        hits = [n for n in names if n == member or n.rstrip("/") + "/" == prefix
                or n.startswith(prefix)]
        if not hits:
            raise ArchiveError(f"{archive}: no member {member!r} (it holds e.g. {names[:5]})")
        chosen.update(hits)
    return chosen


def _safe_destination(archive: Path, target: Path, name: str) -> Path:
    """`target/name`, or `ArchiveError` if `name` is absolute or climbs out of `target`."""
    posix = name.replace("\\", "/")
    parts = PurePosixPath(posix).parts
    if posix.startswith("/") or re.match(r"[A-Za-z]:", posix) or ".." in parts:
        raise ArchiveError(f"{archive}: entry {name!r} would be written outside {target}")
    return target.joinpath(*[p for p in parts if p != "."])


def _check_link(archive: Path, target: Path, name: str, dest: Path, link: str) -> None:
    """Refuse a symlink/hard link whose target resolves outside `target`."""
    if link.startswith("/") or re.match(r"[A-Za-z]:", link):
        raise ArchiveError(f"{archive}: entry {name!r} links outside {target} (to {link!r})")
    resolved = os.path.normpath(os.path.join(os.path.dirname(dest), link))
    root = os.path.normpath(target)
    if os.path.commonpath([root, resolved]) != root:
        raise ArchiveError(f"{archive}: entry {name!r} links outside {target} (to {link!r})")


def _check_inside(archive: Path, target: Path, name: str, dest: Path) -> None:
    """Refuse writing through a symlink (extracted earlier) that leads out of `target`."""
    root = os.path.realpath(target)
    if os.path.commonpath([root, os.path.realpath(dest.parent)]) != root:
        raise ArchiveError(f"{archive}: entry {name!r} would be written outside {target}")


def _write_atomically(dest: Path, chunks: Iterable[bytes]) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.extracting")
    try:
        with open(tmp, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _read_chunks(stream) -> Iterable[bytes]:
    with stream:
        while chunk := stream.read(CHUNK):
            yield chunk


def _extract_zip(archive: Path, target: Path, members: Sequence[str] | None) -> list[Path]:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        chosen = _select(archive, (i.filename for i in infos), members)
        plan = []
        for info in infos:
            if info.filename not in chosen:
                continue
            dest = _safe_destination(archive, target, info.filename)
            # zipfile writes symlink entries as plain files holding the link text: they cannot
            # point anywhere, so only the entry's own path needs checking.
            plan.append((info, dest))
        written = []
        for info, dest in plan:
            if info.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            _check_inside(archive, target, info.filename, dest)
            try:
                _write_atomically(dest, _read_chunks(zf.open(info)))
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
                raise ArchiveError(
                    f"{archive}: entry {info.filename!r} is corrupt or truncated ({err})"
                ) from err
            written.append(dest)
    return written


def _extract_tar(archive: Path, target: Path, members: Sequence[str] | None) -> list[Path]:
    with tarfile.open(archive) as tf:
        infos = tf.getmembers()  # reads the whole index: a truncated archive fails here
        chosen = _select(archive, (i.name for i in infos), members)
        plan = []
        for info in infos:
            if info.name not in chosen:
                continue
            dest = _safe_destination(archive, target, info.name)
            if info.issym() or info.islnk():
                # A hard link names another member, relative to the archive root.
                link = info.linkname if info.issym() else os.path.relpath(
                    target / info.linkname, dest.parent)
                _check_link(archive, target, info.name, dest, link)
            elif not (info.isfile() or info.isdir()):
                raise ArchiveError(f"{archive}: entry {info.name!r} is a device or fifo")
            plan.append((info, dest))
        written = []
        for info, dest in plan:
            _check_inside(archive, target, info.name, dest)
            if info.isdir():
                dest.mkdir(parents=True, exist_ok=True)
            elif info.issym() or info.islnk():
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.unlink(missing_ok=True)
                if info.issym():
                    dest.symlink_to(info.linkname)
                else:
                    os.link(_safe_destination(archive, target, info.linkname), dest)
                written.append(dest)
            else:
                try:
                    _write_atomically(dest, _read_chunks(tf.extractfile(info)))
                except (tarfile.TarError, zlib.error, EOFError, OSError) as err:
                    raise ArchiveError(
                        f"{archive}: entry {info.name!r} is corrupt or truncated ({err})"
                    ) from err
                written.append(dest)
    return written
