"""Caption generation from image features: greedy decoding and sampling, the one sampler
(`imcap caption --sample`, and self-critical training's n captions per image; beam search:
`imcap.model.beam`).

Every decoder works on a whole batch at once and returns token ids [B, L] (PAD after EOS; EOS
included when emitted) and the attention weights [B, L, R] behind each token (zero at PADs;
None without attention). A caption has at most `max_length` words: after that many, one more
step may only end it (EOS when that is the decoder's choice); otherwise it is cut there and
returned without EOS. Decoding stops when every caption has ended or been cut, and the result
is as long as its longest caption. PAD and BOS are never emitted, and EOS not before
`min_length` words.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from imcap.data.vocab import BOS_ID, EOS_ID, PAD_ID
from imcap.model.constraints import DecodingRules
from imcap.model.interface import Decoder


def mask_specials(scores: torch.Tensor, step: int, min_length: int) -> torch.Tensor:
    """`scores` [N, V] (logits or log-probabilities) with the words not allowed at `step` set to
    -inf: PAD and BOS always, EOS while fewer than `min_length` words have been emitted."""
    banned = [PAD_ID, BOS_ID] + ([EOS_ID] if step < min_length else [])
    scores = scores.clone()
    scores[:, banned] = float("-inf")
    return scores


def trim_steps(tokens: torch.Tensor, alphas: torch.Tensor | None
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`tokens` [B, L] and `alphas` [B, L, R] without their trailing all-PAD steps."""
    used = (tokens != PAD_ID).any(dim=0).nonzero()
    width = int(used[-1]) + 1 if len(used) else 0
    return tokens[:, :width], alphas[:, :width] if alphas is not None else None


def check_lengths(max_length: int, min_length: int) -> None:
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    if not 0 <= min_length <= max_length:
        raise ValueError(f"min_length must be between 0 and max_length ({max_length}), "
                         f"got {min_length}")


@torch.no_grad()
def greedy_decode(model: Decoder, grid: torch.Tensor, pooled: torch.Tensor,
                  max_length: int, *, min_length: int = 0, rules: DecodingRules | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The most likely word at every step (of those `rules` allows)."""
    return _decode(model, grid, pooled, max_length, min_length,
                   lambda logits: logits.argmax(dim=1), rules=rules)


@torch.no_grad()
def sample_decode(model: Decoder, grid: torch.Tensor, pooled: torch.Tensor,
                  max_length: int, *, n: int = 1, temperature: float = 1.0, top_k: int = 0,
                  min_length: int = 0, generator: torch.Generator | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Each word drawn from softmax(logits / temperature) over the words allowed (in float32),
    restricted to the `top_k` most likely words when `top_k` > 0; `n` captions per image, as
    one batch of B·n rows (rows b·n .. b·n + n - 1 are image b's: the decoder's state repeated
    n times). `generator` (on the features' device) makes it repeatable. The model decodes in
    the mode it is in (dropout on when training)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 = all words), got {top_k}")

    def draw(logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float() / temperature
        if top_k:
            kth = logits.topk(min(top_k, logits.size(1)), dim=1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)

    return _decode(model, grid, pooled, max_length, min_length, draw, repeat=n)


def _decode(model: Decoder, grid: torch.Tensor, pooled: torch.Tensor, max_length: int,
            min_length: int, pick: Callable[[torch.Tensor], torch.Tensor], repeat: int = 1,
            rules: DecodingRules | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One word per step chosen by `pick` from the masked logits [B·repeat, V]."""
    check_lengths(max_length, min_length)
    state = model.start(grid, pooled)
    if repeat > 1:
        state = state.repeat(repeat)
    batch = grid.size(0) * repeat
    current = torch.full((batch,), BOS_ID, dtype=torch.long, device=grid.device)
    finished = torch.zeros(batch, dtype=torch.bool, device=grid.device)
    words, alphas = [], []
    for step in range(max_length + 1):  # up to max_length words, then only their EOS
        logits, state, alpha = model.step(current, state)
        logits = mask_specials(logits, step, min_length)
        if rules is not None and rules.active:
            history = torch.stack(words, dim=1) if words else current.new_zeros(batch, 0)
            logits = rules.mask(logits, history)
        current = pick(logits)
        if step == max_length:  # no room for another word: the caption is cut instead
            current = current.masked_fill(current != EOS_ID, PAD_ID)
        current = current.masked_fill(finished, PAD_ID)
        words.append(current)
        if alpha is not None:
            alphas.append(alpha.masked_fill((current == PAD_ID).unsqueeze(1), 0.0))
        finished |= current == EOS_ID
        if finished.all():
            break
    return trim_steps(torch.stack(words, dim=1), torch.stack(alphas, dim=1) if alphas else None)
