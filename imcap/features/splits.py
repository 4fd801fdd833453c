"""One split's features, encoded captions and reference captions, for training and evaluation.

A split's features stay in the HDF5 store and are read batch by batch (`StoreRows`) when they
exceed `in_memory_limit` bytes; smaller ones are loaded into RAM once, which is as fast as
before for small stores (the default run's 3,000 images) and bounded in memory for COCO.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from imcap.data.karpathy import CaptionDataset
from imcap.data.vocab import EncodedCaptions
from imcap.features.store import FeatureStore

IN_MEMORY_LIMIT = 2 * 2**30  # bytes


class Rows(Protocol):
    """Indexable by a tensor of row numbers, giving a CPU tensor: a tensor, or a lazy view."""

    def __len__(self) -> int: ...

    def __getitem__(self, rows: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class CaptionedSplit:
    """One split's images (their features and reference captions) and all their captions.

    `grid` and `pooled` are in-memory tensors or lazy views of the feature store
    (`imcap.features.store.StoreRows`) that read only the rows a batch indexes.
    """

    grid: Rows  # [N, R, C] (float16 or float32)
    pooled: Rows  # [N, C]
    captions: torch.Tensor  # [M, L] token ids
    image_row: torch.Tensor  # [M] row in grid/pooled of each caption's image
    references: list[list[list[str]]]  # per image: all its reference captions (tokens)

    def image_batches(self, batch_size: int, device: torch.device
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(grid, pooled) of `batch_size` images at a time, in order, on `device`."""
        for rows in torch.arange(len(self.grid)).split(batch_size):
            yield self.grid[rows].to(device), self.pooled[rows].to(device)


class MismatchError(RuntimeError):
    """Features, vocabulary outputs and caption file describe different image lists."""


def load_split(split: str, encoded: EncodedCaptions, store: FeatureStore,
               dataset: CaptionDataset, in_memory_limit: int = IN_MEMORY_LIMIT
               ) -> CaptionedSplit:
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
    return CaptionedSplit(
        grid=grid.load() if in_memory else grid,
        pooled=pooled.load() if in_memory else pooled,
        captions=torch.from_numpy(encoded.tokens[caption_rows]),
        image_row=torch.from_numpy(row_of[encoded.image_index[caption_rows]]),
        references=[[list(c) for c in dataset.images[i].captions] for i in images],
    )
