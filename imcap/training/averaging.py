"""The mean of the weights at the end of the last epochs (`train.average_last`), kept for the
window of epochs that ends at the best epoch by validation BLEU-4: the published model is that
mean or the best epoch alone, whichever validates higher (`imcap.training.loop.publish`).

At a constant learning rate the weights keep moving: on `shapes`, the test BLEU-4 of consecutive
epochs' weights differs by ±2, so the epoch picked by validation BLEU-4 (300 images, as noisy)
is a lucky draw, and so is its test score. The mean of the last epochs' weights (stochastic
weight averaging's update, once per epoch: Izmailov et al., 2018) sits in the middle of where
they move (docs/training.md, "The published model"). The window ends at the best epoch, not at
the last one: after an early stop, or on a dataset that overfits, the last epochs are past the
best and their mean validates lower.

The last `count` epoch-end weights and the mean of the best epoch's window are kept on the CPU
and go into the resume state, so a resumed run publishes exactly the uninterrupted run's model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

Weights = dict[str, torch.Tensor]


class LastEpochs:
    """The weights at the end of each of the last `count` epochs, and the mean of those that
    were the last ones when `keep_best` was last called (`best`, over `best_count` epochs)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.weights: list[Weights] = []
        self.best: Weights = {}
        self.best_count = 0

    def __len__(self) -> int:
        return len(self.weights)

    def add(self, model: nn.Module) -> None:
        """`model`'s weights now (the end of an epoch), on the CPU; the oldest beyond `count`
        are dropped."""
        if self.count < 1:
            return
        now = {key: value.detach().to("cpu", copy=True)
               for key, value in model.state_dict().items()}
        self.weights = [*self.weights, now][-self.count:]

    def mean(self) -> Weights:
        """The mean of every floating-point tensor over the kept epochs (others: the latest)."""
        if not self.weights:
            raise ValueError("no epoch's weights to average")
        latest = self.weights[-1]
        return {key: (torch.stack([w[key] for w in self.weights]).mean(dim=0)
                      if value.is_floating_point() else value)
                for key, value in latest.items()}

    def keep_best(self) -> None:
        """The current window is the best epoch's: keep its mean (`best`)."""
        if self.weights:
            self.best, self.best_count = self.mean(), len(self.weights)

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.weights, "best": self.best, "best_count": self.best_count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.weights = list(state["weights"])[-self.count:]
        self.best, self.best_count = dict(state["best"]), int(state["best_count"])
