"""The Karpathy split format: the one caption file every dataset source is normalised into.

`{"dataset": name, "images": [{"filename", "imgid", "split", "sentids",
"sentences": [{"tokens", "raw", "imgid", "sentid"}]}]}` as in `dataset_flickr8k.json`.
COCO's `restval` split counts as training data.

The normalised `data/dataset/dataset.json` adds one top-level field, `image_root`: the directory
every `filename` is relative to (`image_root()`).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from imcap.data.cache import resolve_portable

SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {"restval": "train"}


class DatasetFormatError(ValueError):
    """The caption file does not follow the Karpathy format; the message names file and entry."""


@dataclass(frozen=True)
class CaptionedImage:
    filename: str
    imgid: int
    split: str
    captions: tuple[tuple[str, ...], ...]  # tokenised captions
    raw: tuple[str, ...]


@dataclass(frozen=True)
class CaptionDataset:
    name: str
    images: tuple[CaptionedImage, ...]

    def split(self, name: str) -> list[CaptionedImage]:
        return [image for image in self.images if image.split == name]


def load_dataset(path: str | Path) -> CaptionDataset:
    """Read and validate a Karpathy-format caption file. Each word is one string object however
    often it is used, interned as the JSON is decoded (COCO-size: a peak of 0.69 GB instead of
    1.28 GB in every stage that reads it, docs/speed.md)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(), object_hook=_interned)
    except FileNotFoundError:
        raise DatasetFormatError(f"{path}: caption file not found") from None
    except json.JSONDecodeError as err:
        raise DatasetFormatError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetFormatError(f"{path}: expected an object with an 'images' list")
    images = tuple(_parse_image(path, i, entry) for i, entry in enumerate(data["images"]))
    if not images:
        raise DatasetFormatError(f"{path}: no images")
    seen: set[str] = set()
    for image in images:
        if image.filename in seen:
            raise DatasetFormatError(f"{path}: image {image.filename!r} listed twice")
        seen.add(image.filename)
    return CaptionDataset(name=str(data.get("dataset", path.stem)), images=images)


def _interned(entry: dict) -> dict:
    """A JSON object as it is decoded, its `tokens` interned: the strings of each word's uses
    are dropped one caption at a time, never all held at once."""
    tokens = entry.get("tokens")
    if isinstance(tokens, list) and all(isinstance(t, str) for t in tokens):
        entry["tokens"] = [sys.intern(t) for t in tokens]
    return entry


def _parse_image(path: Path, index: int, entry: object) -> CaptionedImage:
    where = f"{path}: images[{index}]"
    if not isinstance(entry, dict):
        raise DatasetFormatError(f"{where}: expected an object")
    for key in ("filename", "imgid", "split", "sentences"):
        if key not in entry:
            raise DatasetFormatError(f"{where}: missing key {key!r}")
    split = _SPLIT_ALIASES.get(entry["split"], entry["split"])
    if split not in SPLITS:
        raise DatasetFormatError(
            f"{where} ({entry['filename']}): unknown split {entry['split']!r}; "
            f"valid: {', '.join(SPLITS + tuple(_SPLIT_ALIASES))}"
        )
    sentences = entry["sentences"]
    if not isinstance(sentences, list) or not sentences:
        raise DatasetFormatError(f"{where} ({entry['filename']}): no sentences")
    captions, raws = [], []
    for j, sentence in enumerate(sentences):
        tokens = sentence.get("tokens") if isinstance(sentence, dict) else None
        valid = isinstance(tokens, list) and tokens and all(isinstance(t, str) for t in tokens)
        if not valid:
            raise DatasetFormatError(
                f"{where} ({entry['filename']}): sentences[{j}] needs a non-empty 'tokens' list"
            )
        captions.append(tuple(tokens))
        raws.append(str(sentence.get("raw", " ".join(tokens))))
    return CaptionedImage(
        filename=str(entry["filename"]),
        imgid=int(entry["imgid"]),
        split=split,
        captions=tuple(captions),
        raw=tuple(raws),
    )


def image_root(caption_file: Path) -> Path:
    """The directory the `filename`s of a normalised caption file are relative to.

    `$IMCAP_CACHE/…` is inside this machine's download cache (how real datasets' downloaded images
    are recorded, so the file and its DVC hash are the same on every machine); another relative
    `image_root` is relative to the caption file's folder; a file without the field (older `shapes`
    output) has its images in `images/` beside it.
    """
    caption_file = Path(caption_file)
    root = resolve_portable(json.loads(caption_file.read_text()).get("image_root", "images"))
    return root if root.is_absolute() else caption_file.parent / root
