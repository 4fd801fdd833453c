"""Training batches from a `torch.utils.data` pipeline over a split's features.

A batch is a set of captions; only its distinct images are read and copied to the device (the
captions index them there). `train.batching` decides how an epoch groups them, in an order fixed
by the seeded generator, every caption once:
- `captions` (default): captions shuffled one by one, as the seed trained. Batches mix ~128
  different images: measured on `shapes` and on the `signs` set, this trains markedly better.
- `images`: images shuffled, each batch takes about `batch_size / captions per image` images with
  *all* their captions, so each image's features are read once per epoch however many captions
  it has — for a store read lazily from disk (COCO), where reads dominate; on `signs` it cost
  10 BLEU-4 points at the default sizes (fewer distinct images per step).

Under DistributedDataParallel each global batch of captions is cut into contiguous shares, one
per rank; every share carries the word count of the whole global batch, so the ranks' summed
losses add up to exactly the single-process mean (see `imcap.training.epoch`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from imcap.data.vocab import PAD_ID
from imcap.features.sharding import Shard
from imcap.features.splits import CaptionedSplit
from imcap.model.loss import trim_padding


@dataclass(frozen=True)
class Batch:
    """One rank's share of a global batch: its images' features once, and their captions."""

    grid: torch.Tensor  # [I, R, C] (R = 0 for a split loaded without regions)
    pooled: torch.Tensor  # [I, C]
    tokens: torch.Tensor  # [M, L] token ids, trimmed to the longest caption
    owner: torch.Tensor  # [M] which of the I images each caption describes
    global_words: int  # target words of the whole global batch (all ranks)

    def pin_memory(self) -> Batch:
        """Page-locked copies (DataLoader's `pin_memory=True` calls this)."""
        return replace(self, grid=self.grid.pin_memory(), pooled=self.pooled.pin_memory(),
                       tokens=self.tokens.pin_memory(), owner=self.owner.pin_memory())

    def to(self, device: torch.device) -> Batch:
        """On `device`; asynchronous from pinned memory."""
        blocking = device.type != "cuda"
        return replace(self, grid=self.grid.to(device, non_blocking=not blocking),
                       pooled=self.pooled.to(device, non_blocking=not blocking),
                       tokens=self.tokens.to(device, non_blocking=not blocking),
                       owner=self.owner.to(device, non_blocking=not blocking))


class EpochBatches(Dataset):
    """Item k is this rank's share of the epoch's k-th batch of captions."""

    def __init__(self, split: CaptionedSplit, caption_batches: list[np.ndarray], shard: Shard
                 ) -> None:
        self.split, self.caption_batches, self.shard = split, caption_batches, shard
        self.words = (split.captions[:, 1:] != PAD_ID).sum(dim=1).numpy()

    def __len__(self) -> int:
        return len(self.caption_batches)

    def __getitem__(self, index: int) -> Batch:
        captions = self.caption_batches[index]
        start, stop = self.shard.bounds(len(captions))
        mine = captions[start:stop]
        images, owner = np.unique(self.split.image_row.numpy()[mine], return_inverse=True)
        rows = torch.from_numpy(images)
        return Batch(grid=self.split.grid[rows], pooled=self.split.pooled[rows],
                     tokens=trim_padding(self.split.captions[torch.from_numpy(mine)]),
                     owner=torch.from_numpy(owner),
                     global_words=int(self.words[captions].sum()))


def images_per_batch(split: CaptionedSplit, batch_size: int) -> int:
    """Images whose captions make about `batch_size` captions."""
    return max(1, round(batch_size * len(split.pooled) / len(split.captions)))


def plan_epoch(split: CaptionedSplit, batch_size: int, generator: torch.Generator,
               world_size: int = 1, by_image: bool = False) -> list[np.ndarray]:
    """The epoch's batches of caption rows, shuffled by `generator`: captions one by one, or
    (`by_image`) images with all their captions. A last batch with fewer captions than ranks
    joins the one before it, so that no rank is ever left without work."""
    if by_image:
        order = torch.randperm(len(split.pooled), generator=generator).numpy()
        step = images_per_batch(split, batch_size)
        image_row = split.image_row.numpy()
        by_owner = np.argsort(image_row, kind="stable")  # captions grouped by image
        first = np.concatenate([[0], np.cumsum(np.bincount(image_row,
                                                           minlength=len(split.pooled)))])
        batches = [np.concatenate([by_owner[first[i]:first[i + 1]] for i in images])
                   for images in np.array_split(order, range(step, len(order), step))]
    else:
        order = torch.randperm(len(split.captions), generator=generator).numpy()
        batches = np.array_split(order, range(batch_size, len(order), batch_size))
    if len(batches) > 1 and len(batches[-1]) < world_size:
        batches[-2:] = [np.concatenate(batches[-2:])]
    return batches


def epoch_loader(split: CaptionedSplit, caption_batches: list[np.ndarray], shard: Shard,
                 device: torch.device, num_workers: int) -> Iterator[Batch]:
    """The epoch's batches for this rank, read by `num_workers` processes (0: this one), in
    pinned memory on CUDA, then on `device`."""
    loader = DataLoader(EpochBatches(split, caption_batches, shard), batch_size=None,
                        num_workers=num_workers, pin_memory=device.type == "cuda",
                        prefetch_factor=4 if num_workers else None)
    for batch in loader:
        yield batch.to(device)
