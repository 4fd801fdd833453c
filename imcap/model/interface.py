"""What every caption decoder offers the decoding rules (greedy, sampling, beam search), so that
they work for any of them (`imcap.model.registry` builds them by name).

A decoder starts from the image and then emits one word per `step`; between steps its state
lives in a `DecodingState`, which knows how to pick, repeat and reorder its batch rows. Beam
search keeps B·k rows (k beams per image) and reorders them at every step; it never needs to
know what the state holds."""

from __future__ import annotations

from typing import Protocol, Self

import torch
from torch import nn

from imcap.model.decoder import DecoderConfig


class DecodingState(Protocol):
    def select(self, rows: torch.Tensor) -> Self:
        """The state of the batch rows `rows`, indices or a mask (e.g. the images still being
        decoded). After `repeat(k)`, `rows` keeps whole images: all k rows of each, in order
        (a state may hold what an image's rows share once per image)."""

    def repeat(self, k: int) -> Self:
        """Every row k times in a row: rows b·k .. b·k + k - 1 are copies of row b."""

    def follow(self, rows: torch.Tensor) -> Self:
        """Row i takes the state of row `rows[i]`, where `rows[i]` belongs to the same image
        (a beam following its parent): what is shared by an image's rows (its regions) may
        stay where it is."""


class Decoder(Protocol):
    """A caption decoder module (`nn.Module`), called as
    `decoder(grid, pooled, captions, teacher_forcing) -> logits [N, V]` to train: the logits of
    the words `captions.targets` (`imcap.model.sorted_captions.SortedCaptions`) holds."""

    config: DecoderConfig  # saved with the checkpoint

    @property
    def attention(self) -> nn.Module | None:
        """The attention module whose weights `step` returns; None: `step` returns none."""

    def start(self, grid: torch.Tensor, pooled: torch.Tensor) -> DecodingState:
        """The state before the first word, from region features `grid` [B, R, C] and the
        pooled vector `pooled` [B, C]."""

    def step(self, tokens: torch.Tensor, state: DecodingState
             ) -> tuple[torch.Tensor, DecodingState, torch.Tensor | None]:
        """The next word after `tokens` [B]: logits [B, V], the new state and the attention
        weights [B, R] over the regions (None without attention)."""

    def compile_steps(self) -> None:
        """`torch.compile` what training runs, in a way batches of every shape reuse."""
