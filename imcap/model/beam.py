"""Beam search batched over images: B images × k beams decode as one batch of B·k rows.

Hugging Face's scheme (`BeamSearchScorer`), batched without a loop over images. At every step
each open beam's log-probabilities are added to its score and the 2k best of the k·V
continuations of each image are ranked (`topk` over a [B, k·V] tensor):
- a continuation with EOS among the k best *finishes* a caption: it enters the image's pool of
  k finished captions with its score divided by the length penalty length^α (length = words +
  EOS, α = `length_penalty`: Hugging Face's form, not GNMT's ((5 + length) / 6)^α; α = 0 ranks
  by the raw log-probability);
- the k best continuations without EOS stay open, ranked by their raw log-probability.
A caption has at most `max_length` words: the step after that may only finish it (as in
`imcap.model.decode`). An image stops searching once its pool is full and no open beam can
still beat the worst finished caption: with α = 0 the best open score, with α > 0 that score
divided by the longest possible length (the exact bound, Hugging Face's `early_stopping=
"never"`), so stopping early never changes the result.

The answer is the best finished caption. Only an image without any (no beam ever ranked EOS
among its k best) falls back to its best open beam, cut at `max_length` words (score
log P / max_length^α): there is always a caption (the popular per-image reference
implementation fails there on an empty list).
With k = 1 and α = 0 this is exactly greedy decoding. Memory grows with the captions (each
beam's history is extended a step at a time), never with `max_length`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from imcap.data.vocab import BOS_ID, EOS_ID, PAD_ID
from imcap.model.decode import check_lengths, mask_specials, trim_steps
from imcap.model.interface import Decoder


class BeamResult(NamedTuple):
    tokens: torch.Tensor  # [B, L] best caption per image, PAD after EOS
    alphas: torch.Tensor | None  # [B, L, R] attention weights of that caption, None without
    scores: torch.Tensor  # [B] its log-probability / length^α


class Captions(NamedTuple):
    """k captions per image: scores [B, k], tokens [B, k, L], attention [B, k, L, R] or None."""

    scores: torch.Tensor
    tokens: torch.Tensor
    alphas: torch.Tensor | None


@torch.no_grad()
def beam_search(model: Decoder, grid: torch.Tensor, pooled: torch.Tensor,
                beam_size: int, max_length: int, *, min_length: int = 0,
                length_penalty: float = 0.0) -> BeamResult:
    """The best of `beam_size` beams for each of the B images in `grid` [B, R, C]."""
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    if length_penalty < 0:
        raise ValueError(f"length_penalty must be >= 0, got {length_penalty}")
    check_lengths(max_length, min_length)
    batch, k, device = grid.size(0), beam_size, grid.device
    steps = max_length + 1
    regions = grid.size(1) if model.attention is not None else None

    def penalised(scores: torch.Tensor, length: int) -> torch.Tensor:
        return scores / length**length_penalty if length_penalty > 0 else scores

    state = model.start(grid, pooled).repeat(k)
    # The open beams of the images still searching (`active`): k rows per image, their raw
    # scores and histories. Finished captions go to `pool`, the cut-off best beam to `cut`.
    active = torch.arange(batch, device=device)
    scores = torch.full((batch, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all k beams start as copies of one: only beam 0 may expand at first
    current = torch.full((batch * k,), BOS_ID, dtype=torch.long, device=device)
    history = torch.zeros(batch * k, 0, dtype=torch.long, device=device)
    attention = (torch.zeros(batch * k, 0, regions, device=device) if regions is not None
                 else None)
    pool, cut = _empty(batch, k, regions, device), _empty(batch, 1, regions, device)
    for step in range(steps):
        logits, state, alpha = model.step(current, state)
        logp = mask_specials(torch.log_softmax(logits.float(), dim=1), step, min_length)
        n, vocab = len(active), logp.size(1)
        top, flat = (scores.reshape(-1, 1) + logp).view(n, k * vocab).topk(2 * k, dim=1)
        token = flat % vocab  # [n, 2k], best first
        rows = torch.arange(n, device=device).unsqueeze(1) * k + flat // vocab
        ends = (token[:, :k] == EOS_ID) & top[:, :k].isfinite()  # EOS among the k best
        if ends.any():
            finished = _extend(history, attention, rows[:, :k], token[:, :k], alpha)
            pool = _merge_into(pool, active, Captions(
                penalised(top[:, :k], step + 1).masked_fill(~ends, float("-inf")), *finished))
        if step == max_length:  # no room for another word: the open beams are cut here
            cut = _place(cut, active, Captions(
                penalised(scores[:, :1], max_length), history.view(n, k, -1)[:, :1],
                attention.view(n, k, *attention.shape[1:])[:, :1] if attention is not None
                else None))
            break
        # The k best continuations without EOS (there are at least k among the 2k best).
        keep = torch.sort((token == EOS_ID).int(), dim=1, stable=True).indices[:, :k]
        scores, token, rows = top.gather(1, keep), token.gather(1, keep), rows.gather(1, keep)
        tokens, alphas = _extend(history, attention, rows, token, alpha)
        history = tokens.flatten(0, 1)
        attention = alphas.flatten(0, 1) if alphas is not None else None
        state = state.follow(rows.view(-1))  # each beam takes its parent's state
        current = token.reshape(-1)
        # Searching on can only help while the best open beam might still beat the worst
        # finished caption (-inf until the pool is full).
        searching = penalised(scores[:, 0], steps) > pool.scores[active, -1]
        if not searching.any():
            break
        if not searching.all():
            kept = searching.repeat_interleave(k)
            active, scores, current = active[searching], scores[searching], current[kept]
            history = history[kept]
            attention = attention[kept] if attention is not None else None
            state = state.select(kept)
    has_finished = pool.scores[:, 0].isfinite()
    width = max(pool.tokens.size(2), cut.tokens.size(2))
    pool, cut = _widen(pool, width), _widen(cut, width)
    tokens = torch.where(has_finished.unsqueeze(1), pool.tokens[:, 0], cut.tokens[:, 0])
    alphas = None
    if pool.alphas is not None and cut.alphas is not None:
        alphas = torch.where(has_finished.view(-1, 1, 1), pool.alphas[:, 0], cut.alphas[:, 0])
    tokens, alphas = trim_steps(tokens, alphas)
    return BeamResult(tokens, alphas,
                      torch.where(has_finished, pool.scores[:, 0], cut.scores[:, 0]))


def _empty(batch: int, k: int, regions: int | None, device: torch.device) -> Captions:
    """k captions per image, none yet: -inf scores, no steps."""
    alphas = torch.zeros(batch, k, 0, regions, device=device) if regions is not None else None
    return Captions(torch.full((batch, k), float("-inf"), device=device),
                    torch.zeros(batch, k, 0, dtype=torch.long, device=device), alphas)


def _widen(captions: Captions, width: int) -> Captions:
    """`captions` with PAD tokens (zero attention) appended up to `width` steps."""
    extra = width - captions.tokens.size(2)
    if extra <= 0:
        return captions
    tokens = torch.nn.functional.pad(captions.tokens, (0, extra), value=PAD_ID)
    alphas = (torch.nn.functional.pad(captions.alphas, (0, 0, 0, extra))
              if captions.alphas is not None else None)
    return Captions(captions.scores, tokens, alphas)


def _extend(history: torch.Tensor, attention: torch.Tensor | None, rows: torch.Tensor,
            token: torch.Tensor, alpha: torch.Tensor | None
            ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The histories [N, L] (attention [N, L, R]) of the beams `rows` [n, m], one step
    longer: `token` [n, m] and the attention `alpha` [N, R] behind it appended, [n, m, L + 1]
    and [n, m, L + 1, R]."""
    n, m = rows.shape
    flat = rows.reshape(-1)
    tokens = torch.cat([history[flat], token.reshape(-1, 1)], dim=1)
    if attention is None or alpha is None:
        return tokens.view(n, m, -1), None
    alphas = torch.cat([attention[flat], alpha[flat].unsqueeze(1)], dim=1)
    return tokens.view(n, m, -1), alphas.view(n, m, *alphas.shape[1:])


def _merge_into(pool: Captions, active: torch.Tensor, new: Captions) -> Captions:
    """The k best of each active image's pooled and `new` finished captions (new ones are
    the longest so far), best first; `pool` widened to their length."""
    pool = _widen(pool, new.tokens.size(2))
    k = pool.scores.size(1)
    scores, pick = torch.cat([pool.scores[active], new.scores], dim=1).topk(k, dim=1)
    tokens = torch.cat([pool.tokens[active], new.tokens], dim=1)
    pool.scores[active] = scores
    pool.tokens[active] = tokens.gather(1, pick.unsqueeze(2).expand(-1, -1, tokens.size(2)))
    if pool.alphas is not None and new.alphas is not None:
        alphas = torch.cat([pool.alphas[active], new.alphas], dim=1)
        pool.alphas[active] = alphas.gather(
            1, pick.view(*pick.shape, 1, 1).expand(-1, -1, *alphas.shape[2:]))
    return pool


def _place(target: Captions, active: torch.Tensor, values: Captions) -> Captions:
    """`target` (all images, widened to `values`) with the captions of the active images."""
    target = _widen(target, values.tokens.size(2))
    target.scores[active] = values.scores
    target.tokens[active] = values.tokens
    if target.alphas is not None and values.alphas is not None:
        target.alphas[active] = values.alphas
    return target

