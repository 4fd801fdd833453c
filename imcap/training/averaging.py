"""The published model as the mean of the weights at the end of the last epochs trained
(`train.average_last`), however the run ends (after its last epoch or stopped early).

At a constant learning rate the weights keep moving: on `shapes`, the test BLEU-4 of consecutive
epochs' weights differs by ±2, so the epoch picked by validation BLEU-4 (300 images, as noisy)
is a lucky draw, and so is its test score. The mean of the last epochs' weights (stochastic
weight averaging's update, once per epoch: Izmailov et al., 2018) sits in the middle of where
they move: over 5 training seeds it halved the spread of test CIDEr-D and lowered that of BLEU-4
by a third, at the same mean (docs/training.md, "The published model").

The last `count` epoch-end weights are kept on the CPU and go into the resume state (`count`
copies of the model's weights), so a resumed run publishes exactly the uninterrupted run's mean.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

Weights = dict[str, torch.Tensor]


class LastEpochs:
    """The weights at the end of each of the last `count` epochs, and their mean."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.weights: list[Weights] = []

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

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.weights = list(state["weights"])[-self.count:]
