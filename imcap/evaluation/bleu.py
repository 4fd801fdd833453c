"""BLEU the seed's way: nltk `corpus_bleu` (BLEU-1..4, uniform weights) × 100.

References are all captions of each image. With the scores come the mean caption length and
BLEU's brevity penalty, so that a decoding mode that wins or loses by length shows it. Also the
score of the best *constant* caption (one
training caption emitted for every test image), the floor a model must clearly beat.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence

from nltk.translate.bleu_score import brevity_penalty, closest_ref_length, corpus_bleu

Tokens = Sequence[str]
_WEIGHTS = {n: tuple([1.0 / n] * n) for n in range(1, 5)}


def bleu_scores(references: Sequence[Sequence[Tokens]], hypotheses: Sequence[Tokens]
                ) -> dict[str, float]:
    """`{"bleu1": .., "bleu4": ..}` in percent, `length`: the mean caption length in words, and
    `brevity_penalty` (0..1): nltk's, over the corpus, from each caption's closest reference
    length (1 when the captions are together longer than those references)."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} reference sets for {len(hypotheses)} hypotheses")
    with warnings.catch_warnings():  # nltk warns on every zero n-gram order; 0 is the answer
        warnings.filterwarnings("ignore", message="(?s).*counts of .*-gram overlaps")
        scores = corpus_bleu(references, hypotheses, weights=[_WEIGHTS[n] for n in range(1, 5)])
    hyp_total = sum(len(h) for h in hypotheses)
    ref_total = sum(closest_ref_length(refs, len(h)) for refs, h in zip(references, hypotheses,
                                                                        strict=True))
    return ({f"bleu{n}": 100.0 * score for n, score in zip(range(1, 5), scores, strict=True)}
            | {"length": hyp_total / max(len(hypotheses), 1),
               "brevity_penalty": brevity_penalty(ref_total, hyp_total)})


def _ngrams(tokens: Tokens, n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def best_constant_caption(references: Sequence[Sequence[Tokens]],
                          candidates: Iterable[Tokens]) -> tuple[tuple[str, ...], float]:
    """The candidate with the highest corpus BLEU-4 when emitted for every image, and that score.

    Scoring every training caption with nltk would take minutes; for a constant hypothesis the
    clipped counts decompose as sum_i min(c, m_i(g)) = sum_{k=1..c} #{i : m_i(g) >= k}, where
    m_i(g) is the largest count of n-gram g in image i's references. One table of those counts
    makes each candidate cost O(its length). Equal to nltk's `corpus_bleu` without smoothing.
    """
    n_images = len(references)
    at_least: Counter = Counter()  # (ngram, k) -> #images whose references hold g >= k times
    ref_lengths = [sorted({len(r) for r in refs}) for refs in references]
    for refs in references:
        best: Counter = Counter()
        for ref in refs:
            for n in range(1, 5):
                best |= _ngrams(ref, n)
        for gram, count in best.items():
            for k in range(1, count + 1):
                at_least[gram, k] += 1
    length_cache: dict[int, int] = {}

    def closest_ref_total(hyp_len: int) -> int:
        if hyp_len not in length_cache:
            length_cache[hyp_len] = sum(
                min(lengths, key=lambda r: (abs(r - hyp_len), r)) for lengths in ref_lengths)
        return length_cache[hyp_len]

    best_caption, best_score = (), -1.0
    for candidate in {tuple(c) for c in candidates}:
        if len(candidate) < 4:
            continue
        log_precision = 0.0
        for n in range(1, 5):
            grams = _ngrams(candidate, n)
            matches = sum(at_least[g, k] for g, c in grams.items() for k in range(1, c + 1))
            if matches == 0:
                break
            log_precision += 0.25 * math.log(matches / (n_images * (len(candidate) - n + 1)))
        else:
            hyp_total, ref_total = n_images * len(candidate), closest_ref_total(len(candidate))
            brevity = 1.0 if hyp_total > ref_total else math.exp(1 - ref_total / hyp_total)
            score = 100.0 * brevity * math.exp(log_precision)
            if score > best_score or (score == best_score and candidate < best_caption):
                best_caption, best_score = candidate, score
    return best_caption, max(best_score, 0.0)
