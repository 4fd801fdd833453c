"""Dataset sources, each normalised into one Karpathy-format caption file.

The normalised `data/dataset/dataset.json` is Karpathy's format plus one top-level field,
`image_root`: the directory every `filename` is relative to. `filename` may contain a folder
(`train2014/COCO_train2014_….jpg`) and is unique. Real datasets' images stay where they were
downloaded or found (never copied into DVC's outputs): `$IMCAP_CACHE/<folder>` for downloads (the
same text, hence the same DVC hash, on every machine), the absolute path of a local copy
(`download.<name>.root`); the generated `shapes` images live beside the file
(`image_root: "images"`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from imcap.data.datasets.coco import load_coco2014
from imcap.data.datasets.flickr import load_flickr8k, load_flickr30k
from imcap.data.datasets.local import load_folder, load_karpathy
from imcap.data.datasets.normaliser import BadImagesError, check_images, normalise
from imcap.data.datasets.base import Source, SourceError

if TYPE_CHECKING:
    from imcap.data.params import DownloadStageParams

LOADERS: dict[str, Callable[[DownloadStageParams], Source]] = {
    "flickr8k": load_flickr8k,
    "flickr30k": load_flickr30k,
    "coco2014": load_coco2014,
    "karpathy": load_karpathy,
    "folder": load_folder,
}

__all__ = ["LOADERS", "BadImagesError", "SourceError", "check_images", "load_source",
           "normalise"]


def load_source(params: DownloadStageParams) -> Source:
    """Obtain (download/extract, or find on disk) and read the source `params.dataset` names."""
    return LOADERS[params.dataset](params)
