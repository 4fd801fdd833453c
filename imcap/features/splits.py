"""One split's features, encoded captions and reference captions, for training and evaluation.

A split's features stay in the HDF5 store and are read batch by batch (`StoreRows`) when they
exceed `in_memory_limit` bytes; smaller ones are loaded into RAM once, which is as fast as
before for small stores (the default run's 3,000 images) and bounded in memory for COCO.

A decoder without attention (`attention: none`) never looks at the region grid: such a split is
loaded with `regions=False` and its `grid` is `NoRegions`, zero regions per image, so the grid is
never read from the store, held in RAM, copied to the device or normalised. The features stage
still stores it (one store serves every attention setting of an encoder).
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


class NoRegions:
    """The grid of a split loaded without regions: [N, 0, C], nothing stored or read."""

    def __init__(self, images: int, channels: int) -> None:
        self.shape = (images, 0, channels)
        self.nbytes = 0

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: torch.Tensor) -> torch.Tensor:
        return torch.empty(len(rows), 0, self.shape[2])

    def load(self) -> NoRegions:
        return self


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
               dataset: CaptionDataset, in_memory_limit: int = IN_MEMORY_LIMIT,
               regions: bool = True) -> CaptionedSplit:
    """Split `split`; `regions=False` for a decoder without attention (see the module doc)."""
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
    pooled = store.rows("pooled", images)
    grid = store.rows("grid", images) if regions else NoRegions(len(images), store.feature_dim)
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
