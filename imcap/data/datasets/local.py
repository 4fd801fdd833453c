"""Sources already on disk: a Karpathy-format JSON + its images, or a folder + a caption CSV."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from imcap.data.datasets.base import (
    Entry,
    Source,
    local_dir,
    local_file,
    read_caption_csv,
    read_karpathy,
)
from imcap.data.text import tokenize

if TYPE_CHECKING:
    from imcap.data.params import DownloadStageParams


def load_karpathy(params: DownloadStageParams) -> Source:
    p = params.download.karpathy
    caption_file = local_file(p.caption_file, "download.karpathy.json")
    images = local_dir(p.images, "download.karpathy.images")
    return Source(caption_file.stem, images, read_karpathy(caption_file))


def load_folder(params: DownloadStageParams) -> Source:
    """Images split at random (seeded by `seed`): val and test get their fractions, rounded."""
    p = params.download.folder
    images = local_dir(p.images, "download.folder.images")
    captions = read_caption_csv(local_file(p.captions, "download.folder.captions"))
    names = sorted(captions)
    random.Random(params.seed).shuffle(names)
    n_val, n_test = round(len(names) * p.val_fraction), round(len(names) * p.test_fraction)
    split = {name: "val" if i < n_val else "test" if i < n_val + n_test else "train"
             for i, name in enumerate(names)}
    entries = [Entry(name, split[name], raws, [tokenize(raw) for raw in raws])
               for name, raws in captions.items()]
    return Source(images.name, images, entries)
