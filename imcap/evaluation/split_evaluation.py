"""A split scored the way training validates: mean caption loss, greedy captions and their
BLEU. The evaluate stage reuses it for the test loss and the greedy captions."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch

from imcap.data.vocab import Vocabulary
from imcap.evaluation.bleu import bleu_scores
from imcap.features.splits import CaptionedSplit
from imcap.model.constraints import DecodingRules
from imcap.model.decode import greedy_decode
from imcap.model.decoding_loop import caption_batches
from imcap.model.interface import Decoder
from imcap.model.loss import split_word_loss


@dataclass(frozen=True)
class SplitEvaluation:
    loss: float  # mean loss per word over the split's captions, as the training loss
    bleu: dict[str, float]  # BLEU-1..4 of the greedy captions (`bleu_scores`)
    captions: list[list[str]]  # the greedy caption of each image


@torch.no_grad()
def evaluate_split(model: Decoder, data: CaptionedSplit, vocab: Vocabulary,
                   device: torch.device, max_length: int, batch_size: int = 256,
                   rules: DecodingRules | None = None) -> SplitEvaluation:
    model.eval()
    summed, words = 0.0, 0
    for rows in torch.arange(len(data.captions)).split(batch_size):
        batch_sum, batch_words = split_word_loss(model, data, rows, device)
        summed, words = summed + batch_sum.item(), words + batch_words
    greedy = partial(greedy_decode, model, max_length=max_length, rules=rules)
    captions = [caption.words for caption in
                caption_batches(greedy, data.image_batches(batch_size, device), vocab)]
    return SplitEvaluation(summed / words,
                           bleu_scores(data.references, captions), captions)
