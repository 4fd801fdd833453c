"""Caption generation from image features."""

from __future__ import annotations

import torch

from imcap.model import CaptionDecoder
from imcap.vocab import BOS_ID, EOS_ID, PAD_ID


@torch.no_grad()
def greedy_decode(model: CaptionDecoder, grid: torch.Tensor, pooled: torch.Tensor,
                  max_length: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Most likely word at every step, for a whole batch at once.

    Returns token ids [B, L] (PAD after EOS; EOS included when emitted) and the attention
    weights [B, L, R] (None without attention).
    """
    state = model.start(grid, pooled)
    batch = grid.size(0)
    current = torch.full((batch,), BOS_ID, dtype=torch.long, device=grid.device)
    finished = torch.zeros(batch, dtype=torch.bool, device=grid.device)
    words, alphas = [], []
    for _ in range(max_length + 1):  # up to max_length words, then EOS
        logits, state, alpha = model.step(current, state)
        current = logits.argmax(dim=1).masked_fill(finished, PAD_ID)
        words.append(current)
        if alpha is not None:
            alphas.append(alpha)
        finished |= current == EOS_ID
        if finished.all():
            break
    return torch.stack(words, dim=1), torch.stack(alphas, dim=1) if alphas else None
