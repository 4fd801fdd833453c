import math
import random

import pytest
from nltk.translate.bleu_score import corpus_bleu

from imcap.evaluation.bleu import best_constant_caption, bleu_scores


def test_perfect_hypotheses_score_100_and_order_is_bleu1_to_4():
    refs = [[["a", "red", "circle", "on", "the", "left"]],
            [["two", "blue", "squares", "at", "top"]]]
    hyps = [r[0] for r in refs]
    assert bleu_scores(refs, hyps) == pytest.approx(
        {"bleu1": 100.0, "bleu2": 100.0, "bleu3": 100.0, "bleu4": 100.0, "length": 5.5,
         "brevity_penalty": 1.0})
    partial = bleu_scores(refs, [["a", "red", "circle", "on", "top", "left"], hyps[1]])
    assert partial["bleu1"] > partial["bleu2"] > partial["bleu3"] > partial["bleu4"] > 0


def test_bleu4_is_nltk_corpus_bleu_times_100():
    refs = [[["a", "cat", "on", "a", "mat"], ["the", "cat", "sits", "on", "the", "mat"]],
            [["a", "dog", "runs", "in", "the", "park", "today"]]]
    hyps = [["the", "cat", "on", "the", "mat"], ["a", "dog", "runs", "in", "a", "park"]]
    assert bleu_scores(refs, hyps)["bleu4"] == pytest.approx(100 * corpus_bleu(refs, hyps))


def test_mean_length_and_brevity_penalty_from_the_closest_reference_lengths():
    """Closest reference lengths 6 (of 6 and 9 for a 4-word caption) and 2 (of 2 and 4 for a
    3-word caption: a tie goes to the shorter, nltk's rule): r = 8 against c = 7 words."""
    refs = [[list("abcdef"), list("abcdefghi")], [list("xy"), list("xyzu")]]
    hyps = [list("abcd"), list("xyz")]
    scores = bleu_scores(refs, hyps)
    assert scores["length"] == 3.5
    assert scores["brevity_penalty"] == pytest.approx(math.exp(1 - 8 / 7))
    # every word matches: BLEU-1 is the brevity penalty alone
    assert scores["bleu1"] == pytest.approx(100 * scores["brevity_penalty"])
    long = bleu_scores(refs, [list("abcdefg"), list("xyz")])
    assert long["brevity_penalty"] == 1.0 and long["length"] == 5.0


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="1 reference sets for 2 hypotheses"):
        bleu_scores([[["a"]]], [["a"], ["b"]])


def test_best_constant_caption_matches_brute_force_nltk():
    rng = random.Random(0)
    words = ["a", "red", "blue", "circle", "square", "left", "right", "on", "the", "top"]

    def sentence():
        return [rng.choice(words) for _ in range(rng.randint(4, 9))]

    refs = [[sentence() for _ in range(3)] for _ in range(12)]
    # candidates include reference captions, so several score above zero
    candidates = [sentence() for _ in range(40)] + [r[0] for r in refs]
    best, score = best_constant_caption(refs, candidates)
    brute = {tuple(c): 100 * corpus_bleu(refs, [c] * len(refs)) for c in candidates}
    assert score > 0
    assert score == pytest.approx(max(brute.values()), abs=1e-9)
    assert brute[best] == pytest.approx(score, abs=1e-9)
