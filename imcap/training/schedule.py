"""The learning rate of each epoch (`train.lr_schedule`), as the anchors decay it:

- `constant`: `train.learning_rate` throughout;
- `step`: × `lr_decay` every `lr_decay_every` epochs (ImageCaptioning.pytorch: × 0.8 every 3);
- `plateau`: × `lr_decay` after every `lr_decay_every` epochs in a row without a better
  validation BLEU-4 (the PyTorch Show-Attend-Tell tutorial's rule, ReduceLROnPlateau's);
- `cosine`: half a cosine from `learning_rate` down to 0 at epoch `train.epochs`.

The decay begins after `lr_decay_start` epochs at the full rate. The rate is a function of the
epoch and the validation scores so far (the epoch logs), nothing else: it needs no state of its
own in the resume state, and a resumed run sets exactly the rate the uninterrupted run had.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from imcap.training.config import TrainParams
from imcap.training.resume import EpochLog


def learning_rate(settings: TrainParams, epoch: int, history: Sequence[EpochLog]) -> float:
    """The rate of epoch `epoch` (1-based), after the epochs logged in `history`."""
    base, start = settings.learning_rate, settings.lr_decay_start
    decayed = max(0, epoch - 1 - start)  # epochs of this one's schedule already trained
    if settings.lr_schedule == "step":
        return base * settings.lr_decay ** (decayed // settings.lr_decay_every)
    if settings.lr_schedule == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * decayed / max(1, settings.epochs - start)))
    if settings.lr_schedule == "plateau":
        return base * settings.lr_decay ** _plateaus(history[: epoch - 1], start,
                                                     settings.lr_decay_every)
    return base


def _plateaus(history: Sequence[EpochLog], start: int, every: int) -> int:
    """How many times `every` epochs after `start` went by without a better validation BLEU-4
    (the count of stale epochs starts again after each decay)."""
    best, stale, count = -math.inf, 0, 0
    for log in history:
        if log.val_bleu4 > best:
            best, stale = log.val_bleu4, 0
        elif log.epoch > start:
            stale += 1
            if stale == every:
                count, stale = count + 1, 0
    return count


def set_learning_rate(optimizer: torch.optim.Optimizer, rate: float) -> None:
    """Every parameter group of `optimizer` at `rate` for the next epoch."""
    for group in optimizer.param_groups:
        group["lr"] = rate
