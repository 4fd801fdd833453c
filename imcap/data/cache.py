"""The download cache: where real datasets, vector archives and their extractions live, outside
every DVC output, shared by all checkouts of the user (`$IMCAP_CACHE`, else `~/.cache/imcap`)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

# How a caption file names a folder inside the cache, so that it reads the same (and DVC hashes it
# the same) on every machine, wherever that machine's cache is.
CACHE_PREFIX = "$IMCAP_CACHE/"


def cache_dir() -> Path:
    """Where downloads land: `$IMCAP_CACHE`, else `~/.cache/imcap` (outside any DVC output)."""
    return Path(os.environ.get("IMCAP_CACHE") or Path.home() / ".cache" / "imcap")


def portable_path(path: Path) -> str:
    """`path` as `$IMCAP_CACHE/<relative>` when it lies in the cache, else unchanged."""
    try:
        return CACHE_PREFIX + Path(path).resolve().relative_to(cache_dir().resolve()).as_posix()
    except ValueError:
        return str(path)


def resolve_portable(text: str) -> Path:
    """The path `portable_path` wrote, on this machine."""
    if text.startswith(CACHE_PREFIX):
        return cache_dir() / text[len(CACHE_PREFIX):]
    return Path(text)


def file_sha256(path: Path) -> str:
    """The sha256 (hex) of a file, read in chunks: a checksum param, a checkpoint's tag."""
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()
