"""The one n-gram counting (imcap.evaluation.bleu_counts) behind the per-image statistics, the
best constant caption and the self-critical reward's BLEU-4: its counts are nltk's, and their
sums give nltk's `corpus_bleu` exactly."""

from __future__ import annotations

import random

import pytest
import torch
from nltk.translate.bleu_score import corpus_bleu as nltk_corpus_bleu
from nltk.translate.bleu_score import modified_precision

from imcap.data.vocab import BOS_ID, EOS_ID, PAD_ID
from imcap.evaluation import bleu, per_image
from imcap.evaluation.bleu_counts import (
    NGRAMS,
    CaptionNgrams,
    ReferenceNgrams,
    WordIds,
    corpus_bleu,
)
from imcap.training.cider_reward import CaptionReward

VOCAB = 12  # word ids 4..11: few words, so n-grams repeat (clipping) and match
WEIGHTS = [tuple([1.0 / n] * n) for n in range(1, 5)]


def corpus(seed: int, images: int = 30) -> tuple[list, list]:
    """Word-id captions: references of 1..9 words, captions of 0..11, some too short for
    4-grams, some sharing a reference's start."""
    rng = random.Random(seed)

    def sentence(low: int, high: int) -> list[int]:
        return [rng.randrange(4, VOCAB) for _ in range(rng.randint(low, high))]

    references = [[sentence(1, 9) for _ in range(rng.randint(1, 5))] for _ in range(images)]
    hypotheses = [refs[0][: rng.randint(0, 5)] + sentence(0, 6) for refs in references]
    return references, hypotheses


def padded(captions: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(c) for c in captions])
    words = torch.zeros(len(captions), max(1, int(lengths.max())), dtype=torch.long)
    for row, caption in enumerate(captions):
        words[row, : len(caption)] = torch.tensor(caption, dtype=torch.long)
    return words, lengths


def table(references: list[list[list[int]]]) -> ReferenceNgrams:
    image = torch.tensor([i for i, refs in enumerate(references) for _ in refs])
    return ReferenceNgrams.from_references(*padded([r for refs in references for r in refs]),
                                           image, VOCAB)


def statistics(references, hypotheses) -> torch.Tensor:
    words, lengths = padded(hypotheses)
    return table(references).statistics(CaptionNgrams.of(words, lengths, VOCAB),
                                        torch.arange(len(hypotheses)))


def nltk_sums(stats: torch.Tensor) -> list[int]:
    """Column sums with nltk's n-gram counts (at least 1 per caption)."""
    stats = stats.clone()
    stats[:, NGRAMS : 2 * NGRAMS].clamp_(min=1)
    return stats.sum(dim=0).tolist()


@pytest.mark.parametrize("seed", range(5))
def test_counts_are_nltks_modified_precision_and_closest_reference_length(seed):
    references, hypotheses = corpus(seed)
    stats = statistics(references, hypotheses)
    for row, refs, hyp in zip(stats.tolist(), references, hypotheses, strict=True):
        for n in range(1, NGRAMS + 1):
            p = modified_precision(refs, hyp, n)
            assert row[n - 1] == p.numerator
            assert max(1, row[NGRAMS + n - 1]) == p.denominator
            assert row[NGRAMS + n - 1] == max(0, len(hyp) - n + 1)
        assert row[-2] == len(hyp)
        assert row[-1] == min((len(r) for r in refs), key=lambda r: (abs(r - len(hyp)), r))


@pytest.mark.filterwarnings("ignore::UserWarning")  # nltk's, on every zero n-gram precision
@pytest.mark.parametrize("seed", range(5))
def test_summed_counts_give_nltk_corpus_bleu_exactly(seed):
    references, hypotheses = corpus(seed)
    sums = nltk_sums(statistics(references, hypotheses))
    scores = nltk_corpus_bleu(references, hypotheses, weights=WEIGHTS)
    for n in range(1, NGRAMS + 1):
        assert corpus_bleu(sums, order=n) == 100.0 * scores[n - 1]


@pytest.mark.parametrize("seed", range(3))
def test_a_constant_caption_counts_as_given_for_every_image(seed):
    references, hypotheses = corpus(seed)
    ngrams = table(references)
    words, lengths = padded(hypotheses)
    constant = ngrams.constant_statistics(CaptionNgrams.of(words, lengths, VOCAB))
    for caption, row in zip(hypotheses, constant.tolist(), strict=True):
        everywhere = statistics(references, [caption] * len(references)).sum(dim=0)
        assert row == everywhere.tolist()
        if len(caption) >= NGRAMS and all(row[:NGRAMS]):
            assert corpus_bleu(row) == pytest.approx(
                100.0 * nltk_corpus_bleu(references, [caption] * len(references)), rel=1e-12)


def test_the_users_of_the_counting_count_alike():
    """The per-image table (words as strings), the constant-caption search and the reward (token
    ids of encoded captions) all count through `ReferenceNgrams`, and agree with nltk."""
    references, hypotheses = corpus(7)
    shared = statistics(references, hypotheses)
    named = [[[f"w{t}" for t in r] for r in refs] for refs in references]
    table_rows = per_image.BleuReferences(named).statistics(
        [[f"w{t}" for t in h] for h in hypotheses])
    assert table_rows[:, :NGRAMS].tolist() == shared[:, :NGRAMS].tolist()
    assert table_rows[:, 2 * NGRAMS :].tolist() == shared[:, 2 * NGRAMS :].tolist()

    rows = [(i, [BOS_ID, *r, EOS_ID] + [PAD_ID] * (10 - len(r))) for i, refs in
            enumerate(references) for r in refs]
    reward = CaptionReward.from_references(torch.tensor([r for _, r in rows]),
                                           torch.tensor([i for i, _ in rows]), VOCAB)
    words, lengths = padded(hypotheses)
    tokens = torch.cat([words, torch.full((len(words), 1), PAD_ID)], dim=1)
    tokens[torch.arange(len(words)), lengths] = EOS_ID
    images = torch.arange(len(hypotheses))
    from_reward = reward.ngrams.statistics(CaptionNgrams.of(words, lengths, VOCAB), images)
    assert torch.equal(from_reward, shared)
    counts = shared.double()  # the reward's BLEU-4: pycocoevalcap's smoothing on these counts
    precision = ((counts[:, :4] + 1e-15) / (counts[:, 4:8] + 1e-9)).prod(dim=1) ** 0.25
    ratio = (counts[:, 8] + 1e-15) / (counts[:, 9] + 1e-9)
    expected = precision * torch.where(ratio < 1, torch.exp(1 - 1 / ratio), 1.0)
    torch.testing.assert_close(reward.scores(tokens, images)[1], expected, rtol=1e-12, atol=0)

    candidates = [c for c in hypotheses if len(c) >= NGRAMS] + [refs[0] for refs in references]
    best, score = bleu.best_constant_caption(named, [[f"w{t}" for t in c] for c in candidates])
    brute = {tuple(f"w{t}" for t in c): 100 * nltk_corpus_bleu(references,
                                                               [c] * len(references))
             for c in candidates if len(c) >= NGRAMS}
    assert score > 0 and score == pytest.approx(max(brute.values()), rel=1e-12)
    assert brute[best] == pytest.approx(score, rel=1e-12)


def test_words_outside_the_references_match_nothing():
    ids = WordIds([[["a", "red", "circle"]]])
    words, lengths = ids.encode([["a", "blue", "circle"], []])
    assert words.tolist() == [[2, 1, 4], [0, 0, 0]] and lengths.tolist() == [3, 0]
    stats = ids.references([[["a", "red", "circle"]], [["red"]]]).statistics(
        CaptionNgrams.of(words, lengths, ids.base), torch.tensor([0, 1]))
    assert stats.tolist() == [[2, 0, 0, 0, 3, 2, 1, 0, 3, 3], [0, 0, 0, 0, 0, 0, 0, 0, 0, 1]]
