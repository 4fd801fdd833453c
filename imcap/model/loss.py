"""The training objective: cross-entropy of each next word given the image and the words
before it."""

from __future__ import annotations

import torch
from torch import nn

from imcap.data.vocab import PAD_ID
from imcap.features.splits import CaptionedSplit
from imcap.model.decoder import CaptionDecoder


def trim_padding(tokens: torch.Tensor) -> torch.Tensor:
    """Drop the all-PAD columns at the end, so steps match the longest caption in the batch."""
    width = int((tokens != PAD_ID).sum(dim=1).max())
    return tokens[:, :width]


def caption_loss(model: CaptionDecoder, data: CaptionedSplit, rows: torch.Tensor,
                 device: torch.device, teacher_forcing: float = 1.0) -> torch.Tensor:
    """Mean loss per word of the captions `rows` of `data` (PAD not counted)."""
    tokens = trim_padding(data.captions[rows]).to(device)
    images = data.image_row[rows]
    logits = model(data.grid[images].to(device), data.pooled[images].to(device), tokens,
                   teacher_forcing)
    return nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)),
                                       tokens[:, 1:].reshape(-1), ignore_index=PAD_ID)
