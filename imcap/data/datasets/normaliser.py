"""Turn a `Source` into the normalised Karpathy-format dict, after checking every image.

The check decodes each image once (JPEGs at 1/8 scale via PIL's draft mode: every byte is still
parsed, so a truncated file fails, at a fraction of the cost), in parallel, with a progress bar.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from imcap.data.cache import portable_path
from imcap.data.params import DownloadParams
from imcap.data.datasets.base import Entry, Source, SourceError
from imcap.progress import progress_bar

SPLITS = ("train", "val", "test")
_PARALLEL_FROM = 500  # fewer images are checked in-process: a pool costs more than it saves


class BadImagesError(RuntimeError):
    """Referenced images are missing or do not decode; the message counts and names them."""


def check_image(path: str) -> str | None:
    """None when `path` decodes as an image, else why not."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (64, 64))
            image.load()
    except FileNotFoundError:
        return "missing"
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError,
            Image.DecompressionBombError) as err:
        return f"cannot decode ({err})"
    return None


def check_images(root: Path, filenames: Sequence[str], workers: int = 0,
                 progress: bool = True) -> list[tuple[str, str]]:
    """(filename, reason) for every image under `root` that is missing or does not decode."""
    paths = [str(root / name) for name in filenames]
    workers = workers or _usable_cpus()
    bar = dict(total=len(paths), desc="check images", unit="img", disable=not progress)
    if workers == 1 or len(paths) < _PARALLEL_FROM:
        reasons = list(progress_bar(map(check_image, paths), **bar))
    else:
        with ProcessPoolExecutor(workers) as pool:
            reasons = list(progress_bar(pool.map(check_image, paths, chunksize=64), **bar))
    return [(name, reason) for name, reason in zip(filenames, reasons, strict=True) if reason]


def _usable_cpus() -> int:
    """CPUs this process may run on (a container's share, not the host's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def normalise(source: Source, config: DownloadParams, progress: bool = True
              ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The normalised caption dict and the skipped-images record for `source`.

    `config.restval` images become train (`"train"`) or are left out (`"drop"`); no `restval`
    split reaches the output. Missing or undecodable images (checked by `config.check_workers`
    processes) fail (`config.on_bad_image="fail"`) or are dropped and listed in the record
    (`"skip"`).
    """
    entries = [e for e in source.entries if e.split != "restval" or config.restval == "train"]
    _check_unique(source, entries)
    bad = check_images(source.image_root, [e.filename for e in entries], config.check_workers,
                       progress)
    if bad and config.on_bad_image == "fail":
        listed = "\n".join(f"  {name}: {reason}" for name, reason in bad[:20])
        more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise BadImagesError(
            f"{len(bad)} of {len(entries)} images under {source.image_root} are missing or "
            f"unreadable:\n{listed}{more}\nSet download.on_bad_image=skip to leave them out "
            "(they are then listed in data/dataset/skipped.json).")
    dropped = {name for name, _ in bad}
    kept = [e for e in entries if e.filename not in dropped]
    for split in SPLITS:
        if not any(_split(e) == split for e in kept):
            raise SourceError(f"{source.name}: no {split} images left (of {len(entries)})")
    skipped = {"count": len(bad), "images": [{"filename": n, "reason": r} for n, r in bad]}
    return _karpathy_dict(source, kept), skipped


def _split(entry: Entry) -> str:
    return "train" if entry.split == "restval" else entry.split


def _check_unique(source: Source, entries: list[Entry]) -> None:
    seen: set[str] = set()
    for entry in entries:
        if entry.filename in seen:
            raise SourceError(f"{source.name}: image {entry.filename} is listed twice")
        seen.add(entry.filename)


def _karpathy_dict(source: Source, entries: list[Entry]) -> dict[str, Any]:
    """`imgid` and `sentid` are renumbered from 0 (the source's ids are not always unique)."""
    images, sentid = [], 0
    for imgid, entry in enumerate(entries):
        sentences = [{"tokens": tokens, "raw": raw, "imgid": imgid, "sentid": sentid + j}
                     for j, (tokens, raw) in enumerate(zip(entry.tokens, entry.raw, strict=True))]
        images.append({"filename": entry.filename, "imgid": imgid, "split": _split(entry),
                       "sentids": [s["sentid"] for s in sentences], "sentences": sentences,
                       **entry.extra})
        sentid += len(sentences)
    return {"dataset": source.name, "image_root": portable_path(source.image_root),
            "images": images}
