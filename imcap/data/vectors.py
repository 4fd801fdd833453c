"""Streaming reader for word-vector text files (GloVe `.txt`, fastText `.vec`), read straight out
of their zip archive.

Both formats are one `word v1 ... vd` line per word, separated by single spaces; fastText adds a
header line `<count> <dim>` and a trailing space on each line. The 2M x 300 fastText file is
about 4.5 GB of text, so it is never held in memory: lines are read one at a time and only the
rows of the wanted words are parsed into floats and kept. Every line's field count is checked
(a cheap byte count), so a truncated or malformed line anywhere fails, naming file and line.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

READ_BUFFER = 1 << 20


class VectorFileError(ValueError):
    """A malformed, truncated or missing vector file; the message names the file and line."""


@dataclass(frozen=True)
class FoundVectors:
    """The vectors of the wanted words that the file has (others are simply absent)."""

    dim: int
    rows: dict[str, np.ndarray]  # wanted word -> float32 [dim]


def read_vectors(lines: Iterable[bytes], wanted: Collection[str], source: str,
                 dim: int | None = None, cased: bool = False) -> FoundVectors:
    """Keep the vectors of `wanted` words from `lines` (raw bytes, one vector per line).

    A first line of two integers is a header (`<count> <dim>`, fastText); then exactly `count`
    vectors must follow. Without one (GloVe), the first line's field count gives the dimension.
    `dim`, when given, is what the file must have. With `cased` (fastText's vocabulary keeps
    case), a wanted word takes the vector of its exact spelling if the file has one, else of the
    first line whose lowercase form it is ("paris" gets "paris", failing that "Paris").
    Words are decoded as UTF-8 with replacement: a word with broken bytes cannot be wanted.
    """
    wanted = set(wanted)
    rows: dict[str, np.ndarray] = {}
    declared: int | None = None
    count = 0
    lineno = 0
    for lineno, raw in enumerate(lines, start=1):
        line = raw.rstrip(b"\r\n ")
        if lineno == 1:
            header = line.split(b" ")
            if len(header) == 2 and header[0].isdigit() and header[1].isdigit():
                declared, file_dim = int(header[0]), int(header[1])
                if dim is not None and file_dim != dim:
                    raise VectorFileError(
                        f"{source}:1: header says {file_dim} dimensions, expected {dim}")
                dim = file_dim
                continue
            if dim is None:
                dim = len(header) - 1
        count += 1
        if line.count(b" ") != dim:
            raise VectorFileError(
                f"{source}:{lineno}: expected a word and {dim} numbers, found "
                f"{len(line.split(b' '))} fields (truncated or malformed line)")
        head = line[: line.index(b" ")]
        word = head.decode("utf-8", errors="replace")
        if word in wanted:
            key = word
        elif cased and (lower := word.lower()) in wanted and lower not in rows:
            key = lower
        else:
            continue
        rows[key] = _parse_row(line, len(head), source, lineno)
    if dim is None:
        raise VectorFileError(f"{source}: empty file, no vectors")
    if declared is not None and count != declared:
        raise VectorFileError(
            f"{source}:{lineno}: header announces {declared} vectors, the file has {count} "
            "(truncated?)")
    return FoundVectors(dim, rows)


def _parse_row(line: bytes, word_length: int, source: str, lineno: int) -> np.ndarray:
    try:
        vector = np.array(line[word_length + 1:].split(b" "), dtype=np.float32)
    except ValueError as err:
        raise VectorFileError(f"{source}:{lineno}: not a number ({err})") from None
    if not np.isfinite(vector).all():
        raise VectorFileError(f"{source}:{lineno}: non-finite value in the vector")
    return vector


def read_zip_vectors(archive: Path, member: str, wanted: Collection[str],
                     dim: int | None = None, cased: bool = False) -> FoundVectors:
    """`read_vectors` on one member of a zip, decompressed as a stream (nothing extracted)."""
    source = f"{archive}:{member}"
    try:
        with zipfile.ZipFile(archive) as zf:
            if member not in zf.namelist():
                raise VectorFileError(
                    f"{archive}: no member {member!r}; it holds {', '.join(zf.namelist())}")
            with io.BufferedReader(zf.open(member), READ_BUFFER) as stream:
                return read_vectors(stream, wanted, source, dim=dim, cased=cased)
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        raise VectorFileError(f"{source}: corrupt or truncated archive ({err})") from err
