"""Flickr8k and Flickr30k, from their archives (downloaded once) or an existing copy (`root`).

Flickr8k_Dataset.zip holds `Flicker8k_Dataset/` (sic); Flickr8k_text.zip holds
`Flickr8k.token.txt` and the official split lists `Flickr_8k.{train,dev,test}Images.txt`, which
are the 6,000 / 1,000 / 1,000 splits Karpathy's `dataset_flickr8k.json` uses too.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from imcap.data.datasets.base import (
    Entry,
    Source,
    SourceError,
    dataset_dir,
    find,
    karpathy_file,
    local_dir,
    obtain,
    read_karpathy,
    read_list,
    read_token_file,
)
from imcap.data.text import tokenize

if TYPE_CHECKING:
    from imcap.data.params import DownloadStageParams

FLICKR8K_IMAGES = ("Flicker8k_Dataset", "Flickr8k_Dataset")
TOKEN_FILES = ("Flickr8k.token.txt", "Flickr8k_text/Flickr8k.token.txt")
FLICKR8K_LISTS = {"train": "Flickr_8k.trainImages.txt", "val": "Flickr_8k.devImages.txt",
                  "test": "Flickr_8k.testImages.txt"}
FLICKR30K_IMAGES = ("flickr30k-images", "flickr30k_images")


def load_flickr8k(params: DownloadStageParams) -> Source:
    p, d = params.download.flickr8k, params.download
    if p.root:
        base = local_dir(p.root, "download.flickr8k.root")
    else:
        base = dataset_dir("flickr8k")
        obtain(p.images_url, p.images_sha256, base, d.keep_archives,
               param="download.flickr8k.images_url")
        obtain(p.text_url, p.text_sha256, base, d.keep_archives,
               param="download.flickr8k.text_url")
    images = find(base, FLICKR8K_IMAGES, "Flickr8k image folder")
    if p.karpathy_splits:
        entries = read_karpathy(_karpathy_json(base, bool(p.root), params, "flickr8k"))
    else:
        token_file = find(base, TOKEN_FILES, "Flickr8k caption file")
        entries = _official_splits(token_file)
    return Source("flickr8k", images, entries)


def load_flickr30k(params: DownloadStageParams) -> Source:
    p, d = params.download.flickr30k, params.download
    if p.root:
        base = local_dir(p.root, "download.flickr30k.root")
    else:  # params validation guarantees a URL here
        base = dataset_dir("flickr30k")
        obtain(p.images_url, p.images_sha256, base, d.keep_archives,
               param="download.flickr30k.images_url")
    images = find(base, FLICKR30K_IMAGES, "Flickr30k image folder")
    entries = read_karpathy(_karpathy_json(base, bool(p.root), params, "flickr30k"))
    return Source("flickr30k", images, entries)


def _karpathy_json(base: Path, local: bool, params: DownloadStageParams, name: str) -> Path:
    """`dataset_<name>.json`: from a local copy (never downloaded then), else from splits_url."""
    member = f"dataset_{name}.json"
    if local:
        if not (base / member).is_file():
            raise SourceError(
                f"{base}: no {member}; copy it there from Karpathy's caption_datasets.zip "
                f"({params.download.splits_url or 'see docs/datasets.md'})")
        return base / member
    return karpathy_file(params.download.splits_url, params.download.splits_sha256, member)


def _official_splits(token_file: Path) -> list[Entry]:
    """Images of the split lists beside `token_file`, with its captions."""
    text = token_file.parent
    captions = read_token_file(token_file)
    entries = []
    for split, list_name in FLICKR8K_LISTS.items():
        list_file = find(text, (list_name,), f"{split} split list")
        for lineno, name in read_list(list_file):
            if name not in captions:
                raise SourceError(f"{list_file}:{lineno}: {name} has no captions in {token_file}")
            raws = captions[name]
            entries.append(Entry(name, split, raws, [tokenize(raw) for raw in raws]))
    return entries
