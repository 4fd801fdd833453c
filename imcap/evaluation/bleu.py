"""BLEU the seed's way: nltk `corpus_bleu` (BLEU-1..4, uniform weights) × 100.

References are all captions of each image. With the scores come the mean caption length and
BLEU's brevity penalty, so that a decoding mode that wins or loses by length shows it. Also the
score of the best *constant* caption (one training caption emitted for every test image), the
floor a model must clearly beat, from the n-gram counts of imcap/evaluation/bleu_counts.py.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

import torch

from imcap.evaluation.bleu_counts import NGRAMS, CaptionNgrams, WordIds, corpus_bleu

Tokens = Sequence[str]
_WEIGHTS = {n: tuple([1.0 / n] * n) for n in range(1, 5)}
_BATCH = 16384  # constant-caption candidates counted at once


def bleu_scores(references: Sequence[Sequence[Tokens]], hypotheses: Sequence[Tokens]
                ) -> dict[str, float]:
    """`{"bleu1": .., "bleu4": ..}` in percent, `length`: the mean caption length in words, and
    `brevity_penalty` (0..1): nltk's, over the corpus, from each caption's closest reference
    length (1 when the captions are together longer than those references)."""
    # imported here: training imports this module, and the GPU machines' benchmarks run it
    # without nltk
    from nltk.translate.bleu_score import brevity_penalty, closest_ref_length
    from nltk.translate.bleu_score import corpus_bleu as nltk_bleu

    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} reference sets for {len(hypotheses)} hypotheses")
    with warnings.catch_warnings():  # nltk warns on every zero n-gram order; 0 is the answer
        warnings.filterwarnings("ignore", message="(?s).*counts of .*-gram overlaps")
        scores = nltk_bleu(references, hypotheses, weights=[_WEIGHTS[n] for n in range(1, 5)])
    hyp_total = sum(len(h) for h in hypotheses)
    ref_total = sum(closest_ref_length(refs, len(h)) for refs, h in zip(references, hypotheses,
                                                                        strict=True))
    return ({f"bleu{n}": 100.0 * score for n, score in zip(range(1, 5), scores, strict=True)}
            | {"length": hyp_total / max(len(hypotheses), 1),
               "brevity_penalty": brevity_penalty(ref_total, hyp_total)})


def best_constant_caption(references: Sequence[Sequence[Tokens]],
                          candidates: Iterable[Tokens]) -> tuple[tuple[str, ...], float]:
    """The candidate with the highest corpus BLEU-4 when emitted for every image, and that
    score (nltk's `corpus_bleu` without smoothing; ties go to the candidate first in sorted
    order). Only candidates of at least 4 words with a match of every order can score above 0;
    none: `((), 0.0)`.

    Scoring every training caption with nltk would take minutes; a constant caption's counts,
    summed over the images, come from one table of the references' n-grams
    (`ReferenceNgrams.constant_statistics`), for a batch of candidates at once.
    """
    distinct = sorted({tuple(c) for c in candidates if len(c) >= NGRAMS})
    if not distinct:
        return (), 0.0
    words = WordIds(references)
    table = words.references(references)
    best_caption, best_score = (), 0.0
    for start in range(0, len(distinct), _BATCH):
        batch = distinct[start : start + _BATCH]
        ids, lengths = words.encode(batch)
        sums = table.constant_statistics(CaptionNgrams.of(ids, lengths, words.base)).double()
        matches, ngrams = sums[:, :NGRAMS], sums[:, NGRAMS : 2 * NGRAMS]
        hyp, ref = sums[:, -2], sums[:, -1]
        brevity = torch.where(hyp > ref, 1.0, torch.exp(1 - ref / hyp))
        scores = brevity * torch.exp((matches / ngrams).log().mean(dim=1))  # -inf log: 0
        top = int(scores.argmax())  # the first of equal scores: the smallest caption
        if scores[top] > 0:
            score = corpus_bleu(sums[top].long().tolist())  # nltk's exact number
            if score > best_score:
                best_caption, best_score = batch[top], score
    return best_caption, best_score
