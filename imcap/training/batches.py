"""Training batches from a `torch.utils.data` pipeline over a split's features.

An epoch is a list of windows, a window a list of batches of captions. One DataLoader item is
one window: its images' features are read once (by a worker when `num_workers` > 0), pinned on
CUDA and copied to the device in one go; each of its batches then gathers its own images there,
so a batch holds only the images its captions describe, each once (the captions index them).
`train.batching` decides how an epoch is cut, in an order fixed by the seeded generator, every
caption once:
- `images` (default): images shuffled and cut into windows of `train.image_window` images
  (the last may hold fewer); the captions of a window's images are shuffled together and cut
  into batches of `batch_size` (the window's last batch may hold fewer). Batches never cross
  windows. Each image is read once per epoch, and with windows much larger than
  `batch_size / captions per image`, a batch mixes about as many images as in `captions` mode
  (on the `signs` set it trained as well: greedy BLEU-4 28.4 against 26.6, 3 seeds). A window's
  features are in memory at once (one more per worker reading ahead).
- `captions`: captions shuffled one by one, as the seed trained; each batch is its own window,
  so an image is read once for each batch holding one of its captions (~5 times an epoch on
  COCO).

Under DistributedDataParallel each global batch of captions is cut into contiguous shares, one
per rank; every share carries the word count of the whole global batch, so the ranks' summed
losses add up to exactly the single-process mean (see `imcap.training.epoch`). A rank reads the
images of its shares of a window, each once.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from imcap.data.vocab import PAD_ID
from imcap.distributed import Shard
from imcap.features.splits import CaptionedSplit
from imcap.model.sorted_captions import SortedCaptions
from imcap.training.readahead import readers

Plan = list[list[np.ndarray]]  # the epoch's windows, each its batches of caption rows
PREFETCH_BATCHES = 4  # batches each DataLoader worker reads ahead (at least one window)


@dataclass(frozen=True)
class Batch:
    """One rank's share of a global batch: its images' features once, and their captions."""

    grid: torch.Tensor  # [I, R, C] (R = 0 for a split loaded without regions)
    pooled: torch.Tensor  # [I, C]
    captions: SortedCaptions  # its captions, longest first; `owner` indexes the I images
    global_words: int  # target words of the whole global batch (all ranks)


@dataclass(frozen=True)
class Window:
    """One rank's shares of a window's batches: the images they describe, each once, and per
    batch which of them it holds and its captions."""

    grid: torch.Tensor  # [I, R, C]
    pooled: torch.Tensor  # [I, C]
    images: torch.Tensor  # per batch (concatenated in batch order): its images, rows of grid
    images_per_batch: tuple[int, ...]
    captions: tuple[SortedCaptions, ...]  # per batch
    global_words: tuple[int, ...]  # per batch: target words of the global batch (all ranks)

    def pin_memory(self) -> Window:
        """Page-locked copies (DataLoader's `pin_memory=True` calls this)."""
        return replace(self, grid=self.grid.pin_memory(), pooled=self.pooled.pin_memory(),
                       images=self.images.pin_memory(),
                       captions=tuple(c.pin_memory() for c in self.captions))

    def to(self, device: torch.device) -> Window:
        """On `device`; asynchronous from pinned memory."""
        non_blocking = device.type == "cuda"
        return replace(self, grid=self.grid.to(device, non_blocking=non_blocking),
                       pooled=self.pooled.to(device, non_blocking=non_blocking),
                       images=self.images.to(device, non_blocking=non_blocking),
                       captions=tuple(c.to(device, non_blocking) for c in self.captions))

    def batches(self) -> Iterator[Batch]:
        """The batches, each with only its own images, gathered where the window is (a window
        of one batch, as in `captions` mode, holds just that batch's images, in order)."""
        if len(self.captions) == 1:
            yield Batch(self.grid, self.pooled, self.captions[0], self.global_words[0])
            return
        for images, captions, words in zip(self.images.split(self.images_per_batch),
                                           self.captions, self.global_words, strict=True):
            yield Batch(self.grid[images], self.pooled[images], captions, words)


class EpochWindows(Dataset):
    """Item k is this rank's share of the epoch's k-th window, its images read once."""

    def __init__(self, split: CaptionedSplit, windows: Plan, shard: Shard) -> None:
        self.split, self.windows, self.shard = split, windows, shard
        self.image_row = split.image_row.numpy()
        self.words = (split.captions[:, 1:] != PAD_ID).sum(dim=1).numpy()

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> Window:
        batches = self.windows[index]
        shares = [batch[slice(*self.shard.bounds(len(batch)))] for batch in batches]
        images, in_window = np.unique(self.image_row[np.concatenate(shares)],
                                      return_inverse=True)
        per_batch = [np.unique(part, return_inverse=True)
                     for part in np.split(in_window, np.cumsum([len(s) for s in shares])[:-1])]
        rows = torch.from_numpy(images)
        return Window(grid=self.split.grid[rows], pooled=self.split.pooled[rows],
                      images=torch.from_numpy(np.concatenate([i for i, _ in per_batch])),
                      images_per_batch=tuple(len(i) for i, _ in per_batch),
                      captions=tuple(
                          SortedCaptions.build(self.split.captions[torch.from_numpy(share)],
                                               torch.from_numpy(owner))
                          for share, (_, owner) in zip(shares, per_batch, strict=True)),
                      global_words=tuple(int(self.words[b].sum()) for b in batches))


class ImageBatches(Dataset):
    """Item k is this rank's share of the k-th batch of image rows and their features (the
    self-critical epochs' batches of images, `imcap.training.self_critical`)."""

    def __init__(self, split: CaptionedSplit, batches: list[torch.Tensor], shard: Shard) -> None:
        self.split, self.batches, self.shard = split, batches, shard

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows = self.batches[index]
        mine = rows[slice(*self.shard.bounds(len(rows)))]
        return mine, self.split.grid[mine], self.split.pooled[mine]


def plan_epoch(split: CaptionedSplit, batch_size: int, generator: torch.Generator,
               world_size: int = 1, image_window: int | None = None) -> Plan:
    """The epoch's windows of batches of caption rows, shuffled by `generator` (see the module
    doc): `image_window` None, captions one by one, one batch a window; else windows of that
    many images. A last batch (or window) with fewer captions than ranks joins the one before
    it, so that no rank is ever left without work."""
    if image_window is None:
        order = torch.randperm(len(split.captions), generator=generator).numpy()
        return [[batch] for batch in _cut(order, batch_size, world_size)]
    if image_window < 1:
        raise ValueError(f"image_window must be > 0 (images per window), not {image_window}")
    windows = _join_short_tail(_window_captions(split, image_window, generator), world_size)
    return [_cut(captions, batch_size, world_size) for captions in windows if len(captions)]


def _window_captions(split: CaptionedSplit, image_window: int, generator: torch.Generator
                     ) -> list[np.ndarray]:
    """Per window of `image_window` shuffled images, the captions of its images, shuffled."""
    images = torch.randperm(len(split.pooled), generator=generator).numpy()
    window_of = np.empty(len(images), dtype=np.int64)
    window_of[images] = np.arange(len(images)) // image_window
    captions = torch.randperm(len(split.captions), generator=generator).numpy()
    caption_window = window_of[split.image_row.numpy()[captions]]
    captions = captions[np.argsort(caption_window, kind="stable")]
    counts = np.bincount(caption_window, minlength=math.ceil(len(images) / image_window))
    return np.split(captions, np.cumsum(counts)[:-1])


def _largest_window(split: CaptionedSplit, windows: Plan) -> int:
    """The most images any window of the plan reads."""
    image_row = split.image_row.numpy()
    return max((len(np.unique(image_row[np.concatenate(window)])) for window in windows),
               default=0)


def _cut(rows: np.ndarray, size: int, world_size: int) -> list[np.ndarray]:
    """`rows` in consecutive pieces of `size` (the last may hold fewer)."""
    return _join_short_tail(np.array_split(rows, range(size, len(rows), size)), world_size)


def _join_short_tail(pieces: list[np.ndarray], world_size: int) -> list[np.ndarray]:
    """`pieces`, the last joined to the one before when it holds fewer than `world_size`."""
    if len(pieces) > 1 and len(pieces[-1]) < world_size:
        pieces[-2:] = [np.concatenate(pieces[-2:])]
    return pieces


def epoch_loader(split: CaptionedSplit, windows: Plan, shard: Shard, device: torch.device,
                 num_workers: int | str) -> Iterator[Batch]:
    """The epoch's batches for this rank on `device`: each window read by one of `num_workers`
    processes (0: this one; `auto`: `imcap.training.readahead`), pinned on CUDA, copied to
    `device` once."""
    batches = sum(len(window) for window in windows)
    ahead = max(1, math.ceil(PREFETCH_BATCHES * len(windows) / batches))
    # a worker holds the windows it has read ahead and the one it is reading
    workers = readers(num_workers, split, _largest_window(split, windows), ahead + 1, device)
    loader = DataLoader(EpochWindows(split, windows, shard), batch_size=None,
                        num_workers=workers, pin_memory=device.type == "cuda",
                        prefetch_factor=ahead if workers else None)
    for window in loader:
        yield from window.to(device).batches()


def image_loader(split: CaptionedSplit, batches: list[torch.Tensor], shard: Shard,
                 device: torch.device, num_workers: int | str
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """This rank's share of each batch of image rows with its grid and pooled features, on
    `device`, read ahead as `epoch_loader` reads its windows. The loader draws its workers'
    seeds from a generator of its own: the global one, which samples the captions, is left as
    it was."""
    largest = max((len(rows) for rows in batches), default=0)
    workers = readers(num_workers, split, largest, PREFETCH_BATCHES + 1, device)
    loader = DataLoader(ImageBatches(split, batches, shard), batch_size=None,
                        num_workers=workers, pin_memory=device.type == "cuda",
                        prefetch_factor=PREFETCH_BATCHES if workers else None,
                        generator=torch.Generator())
    non_blocking = device.type == "cuda"
    for rows, grid, pooled in loader:
        yield (rows.to(device, non_blocking=non_blocking),
               grid.to(device, non_blocking=non_blocking),
               pooled.to(device, non_blocking=non_blocking))
