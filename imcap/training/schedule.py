"""The learning rate of each epoch (`train.lr_schedule`), as the anchors decay it, through
`torch.optim.lr_scheduler`:

- `constant`: `train.learning_rate` throughout;
- `step`: × `lr_decay` every `lr_decay_every` epochs (ImageCaptioning.pytorch: × 0.8 every 3);
- `plateau`: × `lr_decay` after every `lr_decay_every` epochs in a row without a better
  validation BLEU-4 (the PyTorch Show-Attend-Tell tutorial's rule: `ReduceLROnPlateau`);
- `cosine`: half a cosine from `learning_rate` down to 0 at epoch `train.epochs`.

The decay begins after `lr_decay_start` epochs at the full rate (`plateau`: a better score
counts from the first epoch, epochs without one only after the start). The scheduler steps once
after each epoch, with its validation BLEU-4, and its state is part of the resume state, so a
resumed run sets exactly the rate the uninterrupted run had.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau

from imcap.training.params import TrainParams
from imcap.training.resume import EpochLog


def _factor(settings: TrainParams) -> Callable[[int], float]:
    """The rate after `done` epochs, as a multiple of `train.learning_rate` (not `plateau`)."""
    start, every, decay = settings.lr_decay_start, settings.lr_decay_every, settings.lr_decay
    if settings.lr_schedule == "step":
        return lambda done: decay ** (max(0, done - start) // every)
    if settings.lr_schedule == "cosine":
        span = max(1, settings.epochs - start)
        return lambda done: 0.5 * (1 + math.cos(math.pi * max(0, done - start) / span))
    return lambda done: 1.0


class EpochSchedule:
    """`train.lr_schedule` over `optimizer`: `step` after each epoch sets the next one's rate;
    `state_dict` / `load_state_dict` make it a part of the resume state."""

    def __init__(self, optimizer: torch.optim.Optimizer, settings: TrainParams) -> None:
        self.start = settings.lr_decay_start
        self.scheduler: LambdaLR | ReduceLROnPlateau
        if settings.lr_schedule == "plateau":
            self.scheduler = ReduceLROnPlateau(
                optimizer, mode="max", factor=settings.lr_decay,
                patience=settings.lr_decay_every - 1, threshold=0.0, threshold_mode="abs")
        else:
            self.scheduler = LambdaLR(optimizer, _factor(settings))

    def step(self, log: EpochLog) -> None:
        """After epoch `log.epoch`, with its validation BLEU-4."""
        if isinstance(self.scheduler, ReduceLROnPlateau):
            self.scheduler.step(log.val_bleu4)
            if log.epoch <= self.start:  # no stale epochs before the start
                self.scheduler.num_bad_epochs = 0
        else:
            self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state)
