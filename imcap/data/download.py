"""HTTP downloads that resume safely and land atomically.

A download streams into `<dest>.part`, is checked against a sha256 when one is given, and only
then is renamed to `dest`: a file under its final name is always complete. What a resume needs is
kept beside the `.part` in `<dest>.part.json` (`PartFile`): a later run resumes with `Range` and
`If-Range`, so a `.part` of an older version of the file is never continued. A file is complete
only at the size the server announced (Content-Length, Content-Range, or a `416` confirming it).
One process at a time downloads a file (an flock on `<dest>.lock`); the others wait, then find it.
"""

from __future__ import annotations

import errno
import fcntl
import http.client
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from urllib.error import HTTPError, URLError
from urllib.parse import unquote, urlsplit
from urllib.request import Request, urlopen

from imcap.data.cache import cache_dir, file_sha256
from imcap.data.partfile import PartFile
from imcap.progress import progress_bar

CHUNK = 1 << 20
TIMEOUT_S = 60
ATTEMPTS = 3  # failed requests tolerated within one call (a resume continues where it stopped)
_LOCAL_ERRNOS = {errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EDQUOT}
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class DownloadError(RuntimeError):
    """An HTTP failure, an interrupted transfer or a checksum mismatch; names the URL and file."""


def check_url(url: str, param: str = "the URL") -> None:
    """Refuse an empty URL (naming `param`, the parameter it came from), or one not http(s)."""
    if not url.strip():
        raise DownloadError(f"{param} is empty: set it to the file's http(s) URL")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise DownloadError(f"{param}: {url!r} is not an http(s) URL")


def url_file_name(url: str, param: str = "the URL") -> str:
    """The file name `url` ends with, decoded, reduced to its last component.

    `%2F` decodes to a slash: `..%2F..%2Fx` becomes `x`, never a path out of the cache. A name
    that is still not a plain file name (`..`, empty, control characters) is refused.
    """
    check_url(url, param)
    name = re.split(r"[/\\]", unquote(PurePosixPath(urlsplit(url).path).name))[-1]
    if name in ("", ".", "..") or not name.isprintable() or len(name.encode()) > 255:
        raise DownloadError(f"{url}: cannot derive a safe file name from the URL "
                            f"(set {param} to a URL ending in the file's name)")
    return name


def fetch(url: str, sha256: str | None = None, param: str = "the URL") -> Path:
    """Download `url` into `cache_dir()/<file name from the URL>` unless it is already there."""
    return download(url, cache_dir() / url_file_name(url, param), sha256=sha256, param=param)


def download(url: str, dest: Path, sha256: str | None = None, progress: bool = True,
             param: str = "the URL") -> Path:
    """Download `url` to `dest` (atomically, resuming `dest.part`), verifying `sha256` if given.

    An existing `dest` is returned without touching the network when it matches `sha256` (or no
    hash is given); one that does not match is downloaded again.
    """
    check_url(url, param)
    dest = Path(dest)
    expected = sha256.lower() if sha256 else None
    if _done(dest, expected):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _locked(dest.with_name(dest.name + ".lock")):
        if _done(dest, expected):  # another process finished it while this one waited
            return dest
        part = PartFile(dest.with_name(dest.name + ".part"), url)
        _fetch(url, part, progress, vouched=expected is not None)
        if expected is not None:
            actual = file_sha256(part.path)
            if actual != expected:
                part.discard()
                raise DownloadError(
                    f"{url}: sha256 mismatch for {dest}: expected {expected}, got {actual}")
        part.finish(dest)
    return dest


def _done(dest: Path, expected: str | None) -> bool:
    return dest.is_file() and (expected is None or file_sha256(dest) == expected)


@contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive flock on `lock_file` (released when the process dies, however)."""
    try:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise DownloadError(f"cannot create the lock file {lock_file} ({err})") from err
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process downloading {lock_file.name[:-5]} "
                  f"(it holds {lock_file})", file=sys.stderr)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class _Interrupted(Exception):
    """This request did not bring the file further as it should have; another one may."""


class _Unverifiable(Exception):
    """The server neither announces the file's size nor answers Range requests."""


def _fetch(url: str, part: PartFile, progress: bool, vouched: bool) -> None:
    """Request `url` until `part` is complete; a request that fails or brings nothing new counts
    against ATTEMPTS."""
    failures = 0
    while True:
        before = part.size()
        try:
            if _transfer(url, part, progress):
                return
            if part.size() <= before:
                raise _Interrupted(f"the server sent nothing beyond byte {before}")
        except _Unverifiable:
            if vouched:  # the sha256 check decides
                return
            part.discard()
            raise DownloadError(
                f"{url}: the server sends no Content-Length and ignores Range requests, so a "
                f"cut transfer cannot be told from a complete one; set the file's sha256 "
                f"parameter to accept it") from None
        except (OSError, http.client.HTTPException, _Interrupted) as err:
            if isinstance(err, OSError) and err.errno in _LOCAL_ERRNOS:  # not worth retrying
                raise DownloadError(f"{url}: cannot write {part.path} ({err})") from err
            failures += 1
            if isinstance(err, HTTPError) or (failures == ATTEMPTS and isinstance(err, URLError)):
                raise DownloadError(f"{url}: {_describe(err)}") from err
            if failures == ATTEMPTS:
                raise DownloadError(
                    f"{url}: transfer interrupted ({_describe(err)}); {part.path} keeps "
                    f"{part.size()} bytes, run again to resume") from err


def _transfer(url: str, part: PartFile, progress: bool) -> bool:
    """One request bringing `part` further: resumed if its validator allows, else restarted.

    True when `part` is complete; False when it grew but its end is not known yet.
    """
    offset = part.resumable_offset()
    request = Request(url, headers={"User-Agent": "imcap"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
        request.add_header("If-Range", part.validator)
    try:
        response = urlopen(request, timeout=TIMEOUT_S)
    except HTTPError as err:
        if err.code != 416 or not offset:
            raise
        match = re.fullmatch(r"bytes \*/(\d+)", err.headers.get("Content-Range", ""))
        if match and int(match.group(1)) == offset and part.total in (None, offset):
            return True  # nothing left to send: `part` is the whole file
        part.discard()
        raise _Interrupted(f"{part.path} is larger than the file on the server: "
                           "started over") from None
    with response:
        extent = _extent(response, offset)
        if extent is None:  # a 206 for other bytes than asked: useless, and suspicious
            part.discard()
            raise _Interrupted(f"asked for bytes {offset}-, the server sent "
                               f"{response.headers.get('Content-Range')!r}: started over")
        start, end, total = extent
        validator = _validator(response)
        if start == 0:
            part.begin(validator, total)
        elif not part.same_version(validator, total):
            part.discard()
            raise _Interrupted("the file changed on the server: started over")
        elif part.total is None and total is not None:
            part.learn_total(total)
        received = start + _write(response, part, start, end, progress)
    if end is not None and received < end:
        raise _Interrupted(f"connection closed after {received} of {end} bytes")
    if part.total is None:  # the body ended where the connection closed: ask whether that is all
        if (offset and response.status == 200) or not part.validator:
            raise _Unverifiable
        return False
    return received == part.total


def _extent(response, offset: int) -> tuple[int, int | None, int | None] | None:
    """(first byte, end of this body, size of the file) of a 200 or a 206; None for a 206 that
    does not start at `offset`."""
    if response.status != 206:
        length = response.headers.get("Content-Length")
        size = int(length) if length is not None else None
        return 0, size, size
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
    if match is None or int(match.group(1)) != offset:
        return None
    total = None if match.group(3) == "*" else int(match.group(3))
    return offset, int(match.group(2)) + 1, total


def _validator(response) -> str | None:
    """What `If-Range` may send back: a strong ETag, else Last-Modified."""
    etag = response.headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return response.headers.get("Last-Modified")


def _write(response, part: PartFile, start: int, end: int | None, progress: bool) -> int:
    """Append the body to `part` (or rewrite it from `start` 0); the bytes received."""
    received = 0
    with open(part.path, "ab" if start else "wb") as out, progress_bar(
        total=end, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
        desc=part.path.name.removesuffix(".part"), disable=not progress, leave=False,
    ) as bar:
        while chunk := response.read(CHUNK):
            out.write(chunk)
            received += len(chunk)
            bar.update(len(chunk))
    return received


def _describe(err: BaseException) -> str:
    if isinstance(err, HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, URLError):
        return f"cannot connect ({err.reason})"
    return str(err) or type(err).__name__
