"""Sampled captions with their log-probabilities, for self-critical training.

`sample_captions` draws n captions per image as one batch of B·n rows (the decoder's state
repeated n times: an LSTM copies each image's state, the Transformer's n rows attend to the
image's one copy of the region keys and values), one step for all rows at a time, the
log-probability of each drawn token gathered on the device. Captions follow
`imcap.model.decode`'s rules (PAD and BOS never drawn, EOS not before `min_length` words, at most
`max_length` words, then one step that may only end the caption), and each token is drawn from
the distribution those rules leave: softmax over the allowed words. Its log-probabilities are of
that distribution, the EOS included (the EOS is a decision like any word).

Two ways to get gradients:
- call `sample_captions` with gradients on: the log-probabilities carry the graph of the
  decoding steps (the samples and their scores come from the same dropout masks);
- sample under `torch.no_grad()` and score the tokens with `caption_logprobs`, one
  teacher-forced `forward` (the training pass: a `DistributedDataParallel` wrapper syncs its
  gradients, the Transformer runs one causal pass). In eval mode both give the same numbers.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from imcap.data.vocab import BOS_ID, EOS_ID, PAD_ID
from imcap.model.captions import SortedCaptions
from imcap.model.decode import check_lengths, mask_specials
from imcap.model.interface import Decoder


class Samples(NamedTuple):
    """B·n captions; rows b·n .. b·n + n - 1 are image b's."""

    tokens: torch.Tensor  # [B·n, L] token ids, EOS included when drawn, PAD after
    logprobs: torch.Tensor  # [B·n, L] log-probability of each token (0 at PAD)
    mask: torch.Tensor  # [B·n, L] bool: the drawn tokens (words and EOS), False at PAD


def sample_captions(model: Decoder, grid: torch.Tensor, pooled: torch.Tensor, n: int,
                    max_length: int, *, min_length: int = 0,
                    generator: torch.Generator | None = None) -> Samples:
    """`n` captions for each of the B images `grid` [B, R, C] / `pooled` [B, C], drawn at
    temperature 1; `generator` (on the features' device) makes them repeatable."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    check_lengths(max_length, min_length)
    state = model.start(grid, pooled).repeat(n)
    rows = grid.size(0) * n
    current = torch.full((rows,), BOS_ID, dtype=torch.long, device=grid.device)
    finished = torch.zeros(rows, dtype=torch.bool, device=grid.device)
    words, logprobs = [], []
    for step in range(max_length + 1):  # up to max_length words, then only their EOS
        logits, state, _ = model.step(current, state)
        logp = torch.log_softmax(mask_specials(logits.float(), step, min_length), dim=1)
        current = torch.multinomial(logp.detach().exp(), 1, generator=generator).squeeze(1)
        if step == max_length:  # no room for another word: the caption is cut instead
            current = current.masked_fill(current != EOS_ID, PAD_ID)
        current = current.masked_fill(finished, PAD_ID)
        words.append(current)
        logprobs.append(logp.gather(1, current.unsqueeze(1)).squeeze(1))
        finished |= current == EOS_ID
        if finished.all():
            break
    tokens = torch.stack(words, dim=1)
    mask = tokens != PAD_ID
    width = int(mask.any(dim=0).nonzero().max()) + 1 if mask.any() else 0
    tokens, mask = tokens[:, :width], mask[:, :width]
    logprobs = torch.stack(logprobs, dim=1)[:, :width].masked_fill(~mask, 0.0)
    return Samples(tokens, logprobs, mask)


def caption_logprobs(model: nn.Module, grid: torch.Tensor, pooled: torch.Tensor,
                     tokens: torch.Tensor, owner: torch.Tensor, *, min_length: int = 0
                     ) -> torch.Tensor:
    """[S, L] log-probability of each token of the captions `tokens` [S, L] (no BOS, PAD after
    EOS, as `sample_captions` returns them) under `sample_captions`' rules, 0 at PAD, from one
    teacher-forced `model(grid, pooled, captions)`; `owner` [S] is each caption's row of `grid`
    / `pooled`. Copies `tokens` to the host once (the time loop's lengths)."""
    rows, width = tokens.shape
    with_bos = torch.cat([tokens.new_full((rows, 1), BOS_ID), tokens], dim=1)
    captions = SortedCaptions.build(with_bos.cpu(), owner.cpu()).to(grid.device)
    logits = model(grid, pooled, captions).float()
    banned = torch.zeros(logits.size(1), dtype=torch.bool, device=logits.device)
    banned[[PAD_ID, BOS_ID]] = True
    banned = banned.expand_as(logits)
    if min_length:  # EOS too while fewer than min_length words are out
        early = (captions.positions // rows < min_length).unsqueeze(1)
        banned = banned | (early & (torch.arange(logits.size(1), device=logits.device)
                                    == EOS_ID))
    picked = torch.log_softmax(logits.masked_fill(banned, float("-inf")), dim=1
                               ).gather(1, captions.targets.unsqueeze(1))
    steps = len(captions.steps)
    flat = picked.new_zeros(steps * rows).index_put((captions.positions,), picked.squeeze(1))
    in_order = flat.view(steps, rows).t()[torch.argsort(captions.order)]
    return nn.functional.pad(in_order, (0, width - steps))
