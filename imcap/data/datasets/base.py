"""What every source loader shares: the `Source` it returns, caption-file readers, archives.

Readers fail with `SourceError` naming the file and the line (text and JSON files) or the entry
(`images[3]`), so a malformed caption file is fixed in one look.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from imcap.data.archives import CorruptArchiveError, extract
from imcap.data.cache import cache_dir
from imcap.data.download import download, url_file_name
from imcap.data.text import tokenize

KARPATHY_SPLITS = ("train", "val", "test", "restval")


class SourceError(ValueError):
    """A dataset source is missing or malformed; the message names the file (and line/entry)."""


@dataclass
class Entry:
    """One image of a source: `filename` is its path relative to the source's image root."""

    filename: str
    split: str  # train | val | test | restval
    raw: list[str]
    tokens: list[list[str]]
    extra: dict[str, Any] = field(default_factory=dict)  # kept in the output, e.g. cocoid


@dataclass
class Source:
    name: str
    image_root: Path
    entries: list[Entry]


def dataset_dir(name: str) -> Path:
    """Where a dataset's archives are downloaded and extracted (outside DVC's outputs)."""
    return cache_dir() / "datasets" / name


def local_dir(path: str, key: str) -> Path:
    """An existing directory given by parameter `key`."""
    directory = Path(path).expanduser().resolve()
    if not directory.is_dir():
        raise SourceError(f"{key}: {directory} is not a directory")
    return directory


def local_file(path: str, key: str) -> Path:
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise SourceError(f"{key}: {file} does not exist")
    return file


def find(base: Path, candidates: tuple[str, ...], what: str) -> Path:
    """The first of `base/candidate` that exists; the error lists every place looked at."""
    for candidate in candidates:
        if (base / candidate).exists():
            return base / candidate
    raise SourceError(f"{base}: no {what} (looked for {', '.join(candidates)})")


def obtain(url: str, sha256: str, workdir: Path, keep_archive: bool,
           param: str = "the URL") -> None:
    """Download the archive at `url` into `workdir` and extract it there, once.

    A marker file records a finished extraction, so the archive can be deleted afterwards
    (`keep_archive` false) and an interrupted extraction is redone on the next run. `param`
    names the parameter `url` comes from, for the error an empty one gets.
    """
    name = url_file_name(url, param)
    done = workdir / f".{name}.extracted"
    if done.exists():
        return
    archive = download(url, workdir / name, sha256=sha256 or None, param=param)
    _extract_or_forget(archive, workdir)
    done.touch()
    if not keep_archive:
        archive.unlink()


def karpathy_file(url: str, sha256: str, member: str) -> Path:
    """`member` (e.g. dataset_coco.json) of Karpathy's caption_datasets.zip, downloaded once."""
    workdir = dataset_dir("karpathy_splits")
    path = workdir / member
    if not path.exists():
        if not url:
            raise SourceError(f"download.splits_url is empty: cannot obtain {member}")
        archive = download(url, workdir / "caption_datasets.zip", sha256=sha256 or None,
                           param="download.splits_url")
        _extract_or_forget(archive, workdir, [member])
    return path


def _extract_or_forget(archive: Path, target: Path, members: list[str] | None = None) -> None:
    """Extract; a corrupt archive is deleted, or every later run would reuse it. Any other
    failure (a full disk, an entry escaping the target) keeps it: downloading it again would
    not help, and it may be gigabytes."""
    try:
        extract(archive, target, members)
    except CorruptArchiveError as err:
        archive.unlink()
        raise CorruptArchiveError(f"{err}; deleted it, the next run downloads it again") from err


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise SourceError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SourceError(f"{path}: cannot read ({err})") from None


def read_karpathy(path: Path) -> list[Entry]:
    """Entries of a Karpathy split file; an image's path is `filepath/filename` (COCO)."""
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise SourceError(f"{path}: expected an object with an 'images' list (Karpathy format)")
    entries = []
    for i, image in enumerate(data["images"]):
        where = f"{path}: images[{i}]"
        if not isinstance(image, dict) or not isinstance(image.get("filename"), str):
            raise SourceError(f"{where}: expected an object with a 'filename'")
        where += f" ({image['filename']})"
        if image.get("split") not in KARPATHY_SPLITS:
            raise SourceError(f"{where}: split {image.get('split')!r} is not one of "
                              f"{', '.join(KARPATHY_SPLITS)}")
        sentences = image.get("sentences")
        if not isinstance(sentences, list) or not sentences:
            raise SourceError(f"{where}: no 'sentences'")
        raws, tokens = [], []
        for j, sentence in enumerate(sentences):
            words = sentence.get("tokens") if isinstance(sentence, dict) else None
            raw = sentence.get("raw") if isinstance(sentence, dict) else None
            if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
                raise SourceError(f"{where}: sentences[{j}] has no 'tokens' list")
            raw = raw if isinstance(raw, str) else " ".join(words)
            words = words or tokenize(raw)  # a few real entries have empty token lists
            if not words:
                raise SourceError(f"{where}: sentences[{j}] is empty")
            raws.append(raw)
            tokens.append(words)
        filepath = image.get("filepath") or ""
        extra = {"cocoid": image["cocoid"]} if "cocoid" in image else {}
        entries.append(Entry(str(PurePosixPath(filepath, image["filename"])), image["split"],
                             raws, tokens, extra))
    return entries


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Numbered non-blank lines of a UTF-8 text file, naming file and line on a decoding error."""
    try:
        with open(path, "rb") as f:  # decoded line by line, so an error names the exact line
            for lineno, data in enumerate(f, 1):
                try:
                    line = data.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as err:
                    raise SourceError(f"{path}:{lineno}: not UTF-8 text ({err.reason})") from None
                if line.strip():
                    yield lineno, line
    except OSError as err:
        raise SourceError(f"{path}: cannot read ({err})") from None


def read_token_file(path: Path) -> dict[str, list[str]]:
    """Captions per image from a Flickr token file: `<image>.jpg#<n>\\t<caption>` per line."""
    captions: dict[str, list[tuple[int, str]]] = {}
    for lineno, line in _lines(path):
        key, tab, caption = line.partition("\t")
        image, hash_, n = key.rpartition("#")
        if not (tab and hash_ and image and n.isdigit() and tokenize(caption)):
            raise SourceError(
                f"{path}:{lineno}: expected '<image>#<n><TAB><caption>', got {line[:80]!r}")
        captions.setdefault(image, []).append((int(n), caption.strip()))
    if not captions:
        raise SourceError(f"{path}: no captions")
    return {image: [c for _, c in sorted(numbered)] for image, numbered in captions.items()}


def read_list(path: Path) -> list[tuple[int, str]]:
    """A Flickr split list: one image file name per line; (line number, name) pairs."""
    return [(lineno, line.strip()) for lineno, line in _lines(path)]


def read_caption_csv(path: Path) -> dict[str, list[str]]:
    """Captions per image from a CSV with header `image,caption` (one row per caption)."""
    captions: dict[str, list[str]] = {}
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = csv.reader(f)
            header = [cell.strip().lower() for cell in next(rows, [])]
            if header != ["image", "caption"]:
                raise SourceError(f"{path}:1: expected the header 'image,caption', got {header}")
            for row in rows:
                if not row or not any(cell.strip() for cell in row):
                    continue
                image = row[0].strip().replace("\\", "/")
                problem = _csv_row_problem(row, image)
                if problem:
                    raise SourceError(f"{path}:{rows.line_num}: {problem}: {row}")
                captions.setdefault(str(PurePosixPath(image)), []).append(row[1].strip())
    except (UnicodeDecodeError, csv.Error) as err:
        raise SourceError(f"{path}: not a readable UTF-8 CSV ({err})") from None
    except OSError as err:
        raise SourceError(f"{path}: cannot read ({err})") from None
    if not captions:
        raise SourceError(f"{path}: no caption rows")
    return captions


def _csv_row_problem(row: list[str], image: str) -> str | None:
    if len(row) != 2:
        return f"expected 2 columns (image,caption), got {len(row)}"
    if not image:
        return "empty image name"
    if image.startswith("/") or ".." in PurePosixPath(image).parts:
        return "the image must be a path inside the images directory"
    if not tokenize(row[1]):
        return "empty caption"
    return None
