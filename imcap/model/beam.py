"""Beam search batched over images: B images × k beams decode as one batch of B·k rows.

At every step each beam's log-probabilities are added to its score; the k best of the k·V
continuations of each image survive (`topk` over a [B, k·V] tensor, no loop over images).
A beam that has emitted EOS stays in the beam with its score frozen (it may only continue
with PAD at log-probability 0), so pruning compares finished and open captions on the same
footing, and the search ends when all beams of all images are finished. If no beam of an image
emits EOS within `max_length + 1` steps, its best open beam is returned: there is always a
caption (the popular per-image reference implementation fails there on an empty list of
finished captions).

With `length_penalty` α > 0 the final choice among an image's k beams uses
score / length^α (length counted with EOS); pruning uses the raw log-probability. With k = 1
this is exactly greedy decoding.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from imcap.data.vocab import BOS_ID, EOS_ID, PAD_ID
from imcap.model.decode import check_lengths, mask_specials
from imcap.model.decoder import CaptionDecoder, DecoderState


class BeamResult(NamedTuple):
    tokens: torch.Tensor  # [B, L] best caption per image, PAD after EOS
    alphas: torch.Tensor | None  # [B, L, R] attention weights of that caption, None without
    scores: torch.Tensor  # [B] its log-probability (divided by length^α when α > 0)


@torch.no_grad()
def beam_search(model: CaptionDecoder, grid: torch.Tensor, pooled: torch.Tensor,
                beam_size: int, max_length: int, *, min_length: int = 0,
                length_penalty: float = 0.0) -> BeamResult:
    """The best of `beam_size` beams for each of the B images in `grid` [B, R, C]."""
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    if length_penalty < 0:
        raise ValueError(f"length_penalty must be >= 0, got {length_penalty}")
    check_lengths(max_length, min_length)
    batch, k, device = grid.size(0), beam_size, grid.device
    state = _repeat(model.start(grid, pooled), k)
    # Full-size results, updated at the rows of the images still searching (`active`): an image
    # whose k beams have all finished leaves the batch, so later steps skip its rows.
    best_scores = torch.full((batch, k), float("-inf"), device=device)
    best_lengths = torch.zeros(batch, k, dtype=torch.long, device=device)
    active = torch.arange(batch, device=device)
    scores = best_scores.clone()
    scores[:, 0] = 0.0  # all k beams start as copies of one: only beam 0 may expand at first
    current = torch.full((batch * k,), BOS_ID, dtype=torch.long, device=device)
    finished = torch.zeros(batch * k, dtype=torch.bool, device=device)
    lengths = torch.zeros(batch * k, dtype=torch.long, device=device)
    pad_only = torch.full((1, model.config.vocab_size), float("-inf"), device=device)
    pad_only[0, PAD_ID] = 0.0  # a finished beam's one continuation: PAD, score unchanged
    tokens, parents, alphas = [], [], []
    for step in range(max_length + 1):
        logits, state, alpha = model.step(current, state)
        logp = mask_specials(torch.log_softmax(logits.float(), dim=1), step, min_length)
        logp = torch.where(finished.unsqueeze(1), pad_only, logp)
        n, vocab = len(active), logp.size(1)
        scores, flat = (scores.reshape(-1, 1) + logp).view(n, k * vocab).topk(k, dim=1)
        parent, token = flat // vocab, flat % vocab  # [n, k]
        rows = (torch.arange(n, device=device).unsqueeze(1) * k + parent).view(-1)
        # An image's beams share its grid and keys, so only h and c follow the parents.
        state = DecoderState(state.h[rows], state.c[rows], state.grid, state.keys)
        was_finished = finished[rows]
        lengths = lengths[rows] + (~was_finished).long()
        finished = was_finished | (token.view(-1) == EOS_ID)
        current = token.view(-1)
        tokens.append(_scatter(token, active, batch, fill=PAD_ID))
        parents.append(_scatter(parent, active, batch,
                                fill=torch.arange(k, device=device)))
        if alpha is not None:
            alphas.append(_scatter(alpha[rows].view(n, k, -1), active, batch, fill=0.0))
        best_scores[active], best_lengths[active] = scores, lengths.view(n, k)
        searching = ~finished.view(n, k).all(dim=1)
        if not searching.any():
            break
        if not searching.all():
            keep = searching.repeat_interleave(k)
            active, scores = active[searching], scores[searching]
            state = _select(state, keep)
            current, finished, lengths = current[keep], finished[keep], lengths[keep]
    final = best_scores
    if length_penalty > 0:
        final = best_scores / best_lengths.float().pow(length_penalty)
    chosen_scores, chosen = final.max(dim=1)
    out_tokens, out_alphas = _backtrack(chosen, tokens, parents, alphas)
    return BeamResult(out_tokens, out_alphas, chosen_scores)


def _scatter(values: torch.Tensor, active: torch.Tensor, batch: int,
             fill: float | torch.Tensor) -> torch.Tensor:
    """[n, k, ...] values of the active images placed in a [B, k, ...] tensor; the finished
    images' rows hold `fill` (PAD tokens, parents pointing at themselves, zero attention)."""
    full = torch.empty(batch, *values.shape[1:], dtype=values.dtype, device=values.device)
    full[:] = fill
    full[active] = values
    return full


def _select(state: DecoderState, rows: torch.Tensor) -> DecoderState:
    keys = state.keys[rows] if state.keys is not None else None
    return DecoderState(state.h[rows], state.c[rows], state.grid[rows], keys)


def _repeat(state: DecoderState, k: int) -> DecoderState:
    """Each image's state k times in a row: rows b·k .. b·k + k - 1 are image b's beams."""
    keys = state.keys.repeat_interleave(k, dim=0) if state.keys is not None else None
    return DecoderState(state.h.repeat_interleave(k, dim=0), state.c.repeat_interleave(k, dim=0),
                        state.grid.repeat_interleave(k, dim=0), keys)


def _backtrack(beam: torch.Tensor, tokens: list[torch.Tensor], parents: list[torch.Tensor],
               alphas: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Follow the parent pointers from the chosen beam [B] back to the first step."""
    batch = beam.size(0)
    images = torch.arange(batch, device=beam.device)
    out_tokens = torch.empty(batch, len(tokens), dtype=torch.long, device=beam.device)
    out_alphas = (torch.empty(batch, len(tokens), alphas[0].size(2), device=beam.device)
                  if alphas else None)
    for t in reversed(range(len(tokens))):
        out_tokens[:, t] = tokens[t][images, beam]
        if out_alphas is not None:
            out_alphas[:, t] = alphas[t][images, beam]
        beam = parents[t][images, beam]
    if out_alphas is not None:
        out_alphas[out_tokens == PAD_ID] = 0.0  # no word, no attention (as in greedy_decode)
    return out_tokens, out_alphas
