"""Many images captioned batch by batch with any decoding rule (greedy, sampling, beam search):
the words of each caption, the attention behind them and whether it ended."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch

from imcap.data.vocab import EOS_ID, Vocabulary
from imcap.model.beam import beam_search
from imcap.model.constraints import DecodingRules
from imcap.model.interface import Decoder

# (grid [B, R, C], pooled [B, C]) -> (token ids [B, L], attention [B, L, R] or None)
Decode = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]


@dataclass(frozen=True)
class DecodedCaption:
    words: list[str]
    alphas: torch.Tensor | None  # [L, R] attention behind each token, None without attention
    ended: bool  # the caption ended with EOS (rather than at the length limit)


def caption_batches(decode: Decode, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                    vocab: Vocabulary) -> Iterator[DecodedCaption]:
    """One caption per image of `batches` of (grid, pooled) features, in order; each batch is
    decoded when the first of its captions is asked for."""
    for grid, pooled in batches:
        tokens, alphas = decode(grid, pooled)
        for i, ids in enumerate(tokens.tolist()):
            yield DecodedCaption(vocab.decode(ids), alphas[i] if alphas is not None else None,
                                 EOS_ID in ids)


def beam_decoder(model: Decoder, beam_size: int, max_length: int, *, min_length: int = 0,
                 length_penalty: float = 0.0, groups: int = 1, diversity: float = 0.0,
                 rules: DecodingRules | None = None) -> Decode:
    """Beam search as a `Decode`: the best beam's tokens and attention."""

    def decode(grid: torch.Tensor, pooled: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
        result = beam_search(model, grid, pooled, beam_size, max_length, min_length=min_length,
                             length_penalty=length_penalty, groups=groups,
                             diversity=diversity, rules=rules)
        return result.tokens, result.alphas

    return decode
