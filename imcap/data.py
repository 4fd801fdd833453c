"""Assemble one split's features, encoded captions and reference captions for training/eval."""

from __future__ import annotations

import numpy as np
import torch

from imcap.features import FeatureStore
from imcap.karpathy import CaptionDataset
from imcap.training import SplitFeatures
from imcap.vocab import EncodedCaptions


class MismatchError(RuntimeError):
    """Features, vocabulary outputs and caption file describe different image lists."""


def load_split(split: str, encoded: EncodedCaptions, store: FeatureStore,
               dataset: CaptionDataset) -> SplitFeatures:
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
    grid, pooled = store.load(images)
    row_of = np.full(len(filenames), -1, dtype=np.int64)
    row_of[images] = np.arange(len(images))
    caption_rows = np.flatnonzero(row_of[encoded.image_index] >= 0)
    return SplitFeatures(
        grid=torch.from_numpy(grid),
        pooled=torch.from_numpy(pooled),
        captions=torch.from_numpy(encoded.tokens[caption_rows]),
        owner=torch.from_numpy(row_of[encoded.image_index[caption_rows]]),
        references=[[list(c) for c in dataset.images[i].captions] for i in images],
    )
