"""MS COCO 2014: `train2014/` and `val2014/` images, split by Karpathy's `dataset_coco.json`
(113,287 train incl. restval / 5,000 val / 5,000 test), or by the official caption files.

Image names are `train2014/COCO_train2014_….jpg`: Karpathy's `filepath/filename`, unique.
Without Karpathy splits, train2014 is train and val2014 is shuffled with `seed` into
`val_test_size` val, as many test, and the rest `restval`, mirroring Karpathy's construction.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING

from imcap.data.datasets.base import (
    Entry,
    Source,
    SourceError,
    dataset_dir,
    karpathy_file,
    local_dir,
    obtain,
    read_json,
    read_karpathy,
)
from imcap.data.text import tokenize

if TYPE_CHECKING:
    from imcap.data.params import DownloadStageParams

SUBSETS = ("train2014", "val2014")


def load_coco2014(params: DownloadStageParams) -> Source:
    p, d = params.download.coco2014, params.download
    if p.root:
        base = local_dir(p.root, "download.coco2014.root")
    else:
        base = dataset_dir("coco2014")
        obtain(p.train_url, p.train_sha256, base, d.keep_archives,
               param="download.coco2014.train_url")
        obtain(p.val_url, p.val_sha256, base, d.keep_archives,
               param="download.coco2014.val_url")
        if not p.karpathy_splits:
            obtain(p.annotations_url, p.annotations_sha256, base, d.keep_archives,
                   param="download.coco2014.annotations_url")
    for subset in SUBSETS:
        if not (base / subset).is_dir():
            raise SourceError(f"{base}: no {subset}/ image folder")
    if p.karpathy_splits:
        entries = read_karpathy(_karpathy_json(base, bool(p.root), params))
    else:
        entries = _official_splits(base, p.val_test_size, params.seed)
    return Source("coco2014", base, entries)


def _karpathy_json(base: Path, local: bool, params: DownloadStageParams) -> Path:
    if local:
        if not (base / "dataset_coco.json").is_file():
            raise SourceError(
                f"{base}: no dataset_coco.json; copy it there from Karpathy's "
                f"caption_datasets.zip ({params.download.splits_url or 'see docs/datasets.md'}), "
                "or set download.coco2014.karpathy_splits=false")
        return base / "dataset_coco.json"
    d = params.download
    return karpathy_file(d.splits_url, d.splits_sha256, "dataset_coco.json")


def _official_splits(base: Path, val_test_size: int, seed: int) -> list[Entry]:
    annotations = base / "annotations"
    train = read_coco_captions(annotations / "captions_train2014.json", "train2014")
    val = read_coco_captions(annotations / "captions_val2014.json", "val2014")
    if len(val) < 2 * val_test_size:
        raise SourceError(
            f"{annotations / 'captions_val2014.json'}: {len(val)} images, fewer than the "
            f"2 × download.coco2014.val_test_size = {2 * val_test_size} needed for val + test")
    random.Random(seed).shuffle(val)
    for i, entry in enumerate(val):
        entry.split = "val" if i < val_test_size else "test" if i < 2 * val_test_size else "restval"
    for entry in train:
        entry.split = "train"
    return train + val


def read_coco_captions(path: Path, subset: str) -> list[Entry]:
    """Entries of an official caption file (`images[{id, file_name}]`,
    `annotations[{image_id, caption}]`), in image order; split left to the caller."""
    if not path.is_file():
        raise SourceError(f"{path}: COCO caption file not found")
    data = read_json(path)
    if not isinstance(data, dict) or not all(
            isinstance(data.get(key), list) for key in ("images", "annotations")):
        raise SourceError(f"{path}: expected an object with 'images' and 'annotations' lists")
    names: dict[int, str] = {}
    for i, image in enumerate(data["images"]):
        if not (isinstance(image, dict) and isinstance(image.get("id"), int)
                and isinstance(image.get("file_name"), str)):
            raise SourceError(f"{path}: images[{i}] needs an integer 'id' and a 'file_name'")
        names[image["id"]] = image["file_name"]
    captions: dict[int, list[str]] = {}
    for i, note in enumerate(data["annotations"]):
        ok = isinstance(note, dict) and isinstance(note.get("caption"), str)
        if not ok or note.get("image_id") not in names or not tokenize(note["caption"]):
            raise SourceError(f"{path}: annotations[{i}] needs an 'image_id' listed in 'images' "
                              f"and a non-empty 'caption', got {note!r}")
        captions.setdefault(note["image_id"], []).append(note["caption"].strip())
    entries = []
    for image_id, name in names.items():
        if image_id not in captions:
            raise SourceError(f"{path}: image {image_id} ({name}) has no captions")
        raws = captions[image_id]
        entries.append(Entry(f"{subset}/{name}", "", raws, [tokenize(r) for r in raws],
                             {"cocoid": image_id}))
    return entries
