"""The training objective: cross-entropy of each next word given the image and the words
before it."""

from __future__ import annotations

import torch
from torch import nn

from imcap.features.splits import CaptionedSplit
from imcap.model.interface import Decoder
from imcap.model.sorted_captions import SortedCaptions


def summed_word_loss(model: nn.Module, grid: torch.Tensor, pooled: torch.Tensor,
                     captions: SortedCaptions, teacher_forcing: float = 1.0, *,
                     label_smoothing: float = 0.0, attention_regularization: float = 0.0
                     ) -> torch.Tensor:
    """Sum over the target words (PAD not counted) of the cross-entropy (with torch's
    `label_smoothing`); `grid`/`pooled` hold each image once, `captions.owner` says which one
    each caption describes. With `attention_regularization` λ > 0, plus Show-Attend-Tell's
    doubly stochastic term λ Σ_regions (1 − Σ_steps α)² of each caption (its real steps only),
    which pushes every region to be attended to about once over the caption."""
    if attention_regularization > 0:
        logits, coverage = model(grid, pooled, captions, teacher_forcing, coverage=True)
    else:
        logits = model(grid, pooled, captions, teacher_forcing)
    loss = nn.functional.cross_entropy(logits.float(), captions.targets, reduction="sum",
                                       label_smoothing=label_smoothing)
    if attention_regularization > 0:
        loss = loss + attention_regularization * ((1 - coverage.float()) ** 2).sum()
    return loss


def split_word_loss(model: Decoder, data: CaptionedSplit, rows: torch.Tensor,
                    device: torch.device, teacher_forcing: float = 1.0
                    ) -> tuple[torch.Tensor, int]:
    """Summed loss over the words of the captions `rows` of `data` (PAD not counted), and how
    many words that is."""
    images, owner = torch.unique(data.image_row[rows], return_inverse=True)
    captions = SortedCaptions.build(data.captions[rows], owner).to(device)
    summed = summed_word_loss(model, data.grid[images].to(device),
                              data.pooled[images].to(device), captions, teacher_forcing)
    return summed, len(captions.targets)


def caption_loss(model: Decoder, data: CaptionedSplit, rows: torch.Tensor,
                 device: torch.device, teacher_forcing: float = 1.0) -> torch.Tensor:
    """Mean loss per word of the captions `rows` of `data` (PAD not counted)."""
    summed, words = split_word_loss(model, data, rows, device, teacher_forcing)
    return summed / words
