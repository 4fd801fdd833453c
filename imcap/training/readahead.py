"""How many processes read training windows ahead (`train.num_workers`), and whether the shared
memory they hand their windows over in (`/dev/shm`) holds them.

`auto` reads ahead in worker processes only where that pays: on CUDA, for a split read lazily
from the feature store (larger than `train.features_in_memory_gb`), where the GPU would
otherwise wait for each window's disk reads. A split in RAM, or the CPU doing both the reading
and the training, gains nothing from workers (docs/speed.md).

A DataLoader worker passes each window to the training process through `/dev/shm`; when that
is too small (Docker gives containers 64 MB unless told `--shm-size`), the worker dies of a bus
error mid-epoch. So the windows the workers hold at once are compared with its free space
first: a set number of workers that do not fit is a `SharedMemoryError` saying what to change,
and `auto` reads in the training process instead, saying the same once.
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

import torch

from imcap.features.splits import CaptionedSplit

SHARED_MEMORY = Path("/dev/shm")
AUTO_WORKERS = 2  # enough to keep a GPU fed from a page-cached store (docs/speed.md)


class SharedMemoryError(RuntimeError):
    """Workers reading ahead would not fit their windows in /dev/shm; the message says what
    to change."""


def lazy(split: CaptionedSplit) -> bool:
    """Whether `split` is read from the feature store batch by batch (not held in RAM)."""
    return not isinstance(split.pooled, torch.Tensor)


def window_bytes(split: CaptionedSplit, images: int) -> int:
    """The bytes of the features of `images` images of `split` (grid and pooled vector)."""
    if not len(split.pooled):
        return 0
    first = torch.zeros(1, dtype=torch.long)  # one image's rows, whatever holds the split
    return (split.grid[first].nbytes + split.pooled[first].nbytes) * images


def readers(setting: int | str, split: CaptionedSplit, window_images: int, windows_ahead: int,
            device: torch.device) -> int:
    """The worker processes reading windows of at most `window_images` images, each holding
    `windows_ahead` of them, for `train.num_workers` = `setting` (a number, or `auto`)."""
    if setting == "auto":
        if device.type != "cuda" or not lazy(split):
            return 0
        workers = min(AUTO_WORKERS, max(1, _usable_cpus() - 1))
    else:
        workers = int(setting)
    if workers == 0:
        return 0
    problem = _shared_memory_problem(workers, window_bytes(split, window_images) * windows_ahead)
    if problem is None:
        return workers
    if setting != "auto":
        raise SharedMemoryError(f"train.num_workers {workers}: {problem}, or set "
                                "train.num_workers to 0 (read in the training process)")
    _say(f"train.num_workers auto: reading in the training process, not in {workers} workers: "
         f"{problem}")
    return 0


def _shared_memory_problem(workers: int, bytes_per_worker: int) -> str | None:
    """Why `workers` holding `bytes_per_worker` each do not fit in /dev/shm, or None."""
    if not SHARED_MEMORY.is_dir():
        return None  # not Linux: torch shares memory some other way
    needed = workers * bytes_per_worker
    free = shutil.disk_usage(SHARED_MEMORY).free
    if needed <= free:
        return None
    return (f"the windows they read ahead take up to {needed / 2**20:,.0f} MB of "
            f"{SHARED_MEMORY}, which has {free / 2**20:,.0f} MB free; give it more (Docker: "
            f"--shm-size={max(1, -(-needed * 2 // 2**30))}g; Kubernetes: an emptyDir of medium "
            "Memory mounted there), lower train.image_window")


def _usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@functools.cache
def _say(message: str) -> None:
    print(message, flush=True)
