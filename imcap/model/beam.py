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
Diverse beam search (`groups` G > 1, Vijayakumar et al.): each image's k beams form G groups of
k / G, each ranking its own 2k / G best continuations after the earlier groups of the step, by its
search score less `diversity` × how often those groups' beams chose the word (the penalties add
up in the search score). Finished captions of every group share the pool, ranked by their log P
(penalised by length), so `scores` stays the returned caption's log-probability. `rules`
(`imcap.model.constraints`) forbid words before any ranking.
With k = 1 and α = 0 this is exactly greedy decoding. Memory grows with the captions (each
beam's history is extended a step at a time), never with `max_length`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from imcap.data.vocab import BOS_ID, EOS_ID, PAD_ID
from imcap.model.constraints import DecodingRules
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
                length_penalty: float = 0.0, groups: int = 1, diversity: float = 0.0,
                rules: DecodingRules | None = None) -> BeamResult:
    """The best of `beam_size` beams for each of the B images in `grid` [B, R, C]; with
    `groups` > 1, diverse beam search of `groups` groups penalised by `diversity`; words
    `rules` forbids are never chosen."""
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    if length_penalty < 0:
        raise ValueError(f"length_penalty must be >= 0, got {length_penalty}")
    if groups < 1 or beam_size % groups:
        raise ValueError(f"groups must divide beam_size ({beam_size}), got {groups}")
    if diversity < 0:
        raise ValueError(f"diversity must be >= 0, got {diversity}")
    check_lengths(max_length, min_length)
    batch, k, device = grid.size(0), beam_size, grid.device
    m = k // groups  # beams per group
    steps = max_length + 1
    regions = grid.size(1) if model.attention is not None else None
    diverse = groups > 1

    def penalised(scores: torch.Tensor, length: int) -> torch.Tensor:
        return scores / length**length_penalty if length_penalty > 0 else scores

    state = model.start(grid, pooled).repeat(k)
    # The open beams of the images still searching (`active`): k rows per image, their search
    # scores (`scores`; in diverse search log P less the diversity penalties, `logps` their log
    # P) and histories. Finished captions go to `pool`, the cut-off best beam to `cut`.
    active = torch.arange(batch, device=device)
    scores = torch.full((batch, k), float("-inf"), device=device)
    scores[:, ::m] = 0.0  # each group's m beams start as copies of one: only its first expands
    logps = scores.clone() if diverse else scores
    current = torch.full((batch * k,), BOS_ID, dtype=torch.long, device=device)
    history = torch.zeros(batch * k, 0, dtype=torch.long, device=device)
    attention = (torch.zeros(batch * k, 0, regions, device=device) if regions is not None
                 else None)
    pool, cut = _empty(batch, k, regions, device), _empty(batch, 1, regions, device)
    for step in range(steps):
        logits, state, alpha = model.step(current, state)
        logp = mask_specials(torch.log_softmax(logits.float(), dim=1), step, min_length)
        if rules is not None and rules.active:
            logp = rules.mask(logp, history)
        n, vocab = len(active), logp.size(1)
        logp = logp.view(n, groups, m, vocab)
        chosen = torch.zeros(n, vocab, device=device) if diverse and diversity > 0 else None
        ranked = []  # per group: search scores, log P, tokens, rows of the 2m best, best first
        for g in range(groups):
            part = slice(g * m, (g + 1) * m)
            candidates = scores[:, part].unsqueeze(2) + logp[:, g]  # [n, m, V]
            if chosen is not None and g:  # the words earlier groups chose at this step
                candidates = candidates - diversity * chosen.unsqueeze(1)
            top, flat = candidates.view(n, m * vocab).topk(2 * m, dim=1)
            true = ((logps[:, part].unsqueeze(2) + logp[:, g]).view(n, m * vocab).gather(1, flat)
                    if diverse else top)
            token = flat % vocab
            rows = torch.arange(n, device=device).unsqueeze(1) * k + g * m + flat // vocab
            # The m best continuations without EOS (there are at least m among the 2m best).
            keep = torch.sort((token == EOS_ID).int(), dim=1, stable=True).indices[:, :m]
            if chosen is not None:
                picked = top.gather(1, keep).isfinite().float()
                chosen.scatter_add_(1, token.gather(1, keep), picked)
            ranked.append((top, true, token, rows, keep))
        top, true, token, rows = (torch.cat([r[i][:, :m] for r in ranked], dim=1)
                                  for i in range(4))
        ends = (token == EOS_ID) & top.isfinite()  # EOS among a group's m best
        if ends.any():
            finished = _extend(history, attention, rows, token, alpha)
            pool = _merge_into(pool, active, Captions(
                penalised(true, step + 1).masked_fill(~ends, float("-inf")), *finished))
        if step == max_length:  # no room for another word: the open beams are cut here
            best = logps.argmax(dim=1, keepdim=True)  # the first beam, but for diverse groups
            cut = _place(cut, active, Captions(
                penalised(logps.gather(1, best), max_length),
                history.view(n, k, -1).gather(
                    1, best.unsqueeze(2).expand(-1, -1, history.size(1))),
                attention.view(n, k, *attention.shape[1:])[torch.arange(n, device=device),
                                                          best.squeeze(1)].unsqueeze(1)
                if attention is not None else None))
            break
        scores, token, rows = (torch.cat([r[i].gather(1, r[4]) for r in ranked], dim=1)
                               for i in (0, 2, 3))
        logps = torch.cat([r[1].gather(1, r[4]) for r in ranked], dim=1) if diverse else scores
        tokens, alphas = _extend(history, attention, rows, token, alpha)
        history = tokens.flatten(0, 1)
        attention = alphas.flatten(0, 1) if alphas is not None else None
        state = state.follow(rows.view(-1))  # each beam takes its parent's state
        current = token.reshape(-1)
        # Searching on can only help while the best open beam might still beat the worst
        # finished caption (-inf until the pool is full).
        searching = penalised(logps.amax(dim=1), steps) > pool.scores[active, -1]
        if not searching.any():
            break
        if not searching.all():
            kept = searching.repeat_interleave(k)
            active, scores, current = active[searching], scores[searching], current[kept]
            logps = logps[searching] if diverse else scores
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

