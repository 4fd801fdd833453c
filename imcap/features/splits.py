"""Assemble one split's features, encoded captions and reference captions for training/eval.

A split's features stay in the HDF5 store and are read batch by batch (`StoreRows`) when they
exceed `in_memory_limit` bytes; smaller ones are loaded into RAM once, which is as fast as
before for small stores (the default run's 3,000 images) and bounded in memory for COCO.
"""

from __future__ import annotations

import numpy as np
import torch

from imcap.data.karpathy import CaptionDataset
from imcap.data.vocab import EncodedCaptions
from imcap.features.store import FeatureStore
from imcap.training.loop import SplitFeatures

IN_MEMORY_LIMIT = 2 * 2**30  # bytes


class MismatchError(RuntimeError):
    """Features, vocabulary outputs and caption file describe different image lists."""


def load_split(split: str, encoded: EncodedCaptions, store: FeatureStore,
               dataset: CaptionDataset, in_memory_limit: int = IN_MEMORY_LIMIT
               ) -> SplitFeatures:
    filenames = encoded.filenames.tolist()
    if store.filenames != filenames:
        raise MismatchError(
            f"{store.path}: its {len(store.filenames)} images are not the "
            f"{len(filenames)} images of the encoded captions; rerun the features stage")
    if [image.filename for image in dataset.images] != filenames:
        raise MismatchError("the caption file and the encoded captions list different images; "
                            "rerun the vocab stage")
    images = encoded.images_in(split)
    if len(images) == 0:
        raise MismatchError(f"split {split!r} has no images")
    grid, pooled = store.rows("grid", images), store.rows("pooled", images)
    in_memory = grid.nbytes + pooled.nbytes <= in_memory_limit
    row_of = np.full(len(filenames), -1, dtype=np.int64)
    row_of[images] = np.arange(len(images))
    caption_rows = np.flatnonzero(row_of[encoded.image_index] >= 0)
    return SplitFeatures(
        grid=grid.load() if in_memory else grid,
        pooled=pooled.load() if in_memory else pooled,
        captions=torch.from_numpy(encoded.tokens[caption_rows]),
        owner=torch.from_numpy(row_of[encoded.image_index[caption_rows]]),
        references=[[list(c) for c in dataset.images[i].captions] for i in images],
    )
