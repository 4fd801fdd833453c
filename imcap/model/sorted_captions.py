"""A batch of training captions in the order the decoders train on them.

Captions are sorted by decreasing length, so that at step t the captions still being read are
the first `steps[t]` rows: an LSTM step runs only those rows (padding costs nothing), and each
step's outputs are one contiguous block of the step-major word order. `targets` holds the words
to predict in that order, so the loss needs no mask. Everything that needs host values
(`steps`) is computed here, on the CPU, before the batch goes to the device: training never
waits for the device to learn a batch's shape.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from imcap.data.vocab import PAD_ID


@dataclass(frozen=True)
class SortedCaptions:
    tokens: torch.Tensor  # [M, L] token ids (BOS first), by decreasing length, PAD after
    owner: torch.Tensor  # [M] the image (row of the batch's features) each caption describes
    order: torch.Tensor  # [M] caption i here is caption order[i] of the batch as given
    steps: tuple[int, ...]  # steps[t]: captions with a word to predict at step t (L - 1 steps)
    positions: torch.Tensor  # [N] where each word to predict is in a step-major [T * M] view
    targets: torch.Tensor  # [N] the words to predict, step-major: step 0's, then step 1's, …

    @classmethod
    def build(cls, tokens: torch.Tensor, owner: torch.Tensor | None = None) -> SortedCaptions:
        """From token ids [M, L] (PAD only at the end) on the CPU and each caption's image
        (default: caption i describes image i)."""
        lengths = (tokens[:, 1:] != PAD_ID).sum(dim=1)  # words to predict
        order = torch.argsort(lengths, descending=True, stable=True)
        lengths = lengths[order]
        width = int(lengths[0]) if len(lengths) else 0
        active = lengths.unsqueeze(0) > torch.arange(width).unsqueeze(1)  # [T, M]
        positions = active.flatten().nonzero().squeeze(1)
        tokens = tokens[order, :width + 1]
        owner = order if owner is None else owner[order]
        sorted_ = cls(tokens, owner, order, tuple(active.sum(dim=1).tolist()), positions,
                      torch.empty(0))
        return replace(sorted_, targets=sorted_.words_of(tokens[:, 1:]))

    def words_of(self, per_step: torch.Tensor) -> torch.Tensor:
        """[N, ...] from a per-caption, per-step tensor [M, T, ...] (in this order): the
        entries of the predicted words, step-major."""
        steps = per_step.transpose(0, 1).flatten(0, 1)
        return steps[self.positions]

    def to(self, device: torch.device, non_blocking: bool = False) -> SortedCaptions:
        return replace(self, **{name: getattr(self, name).to(device, non_blocking=non_blocking)
                                for name in _TENSORS})

    def pin_memory(self) -> SortedCaptions:
        return replace(self, **{name: getattr(self, name).pin_memory() for name in _TENSORS})


_TENSORS = ("tokens", "owner", "positions", "targets")  # what moves to the device
