"""Per-image statistics (imcap.evaluation.per_image) and bootstrap intervals
(imcap.evaluation.bootstrap): BLEU from summed per-image counts is nltk's corpus BLEU exactly,
a resample is a reweighting of the images, and the intervals are reproducible."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
from nltk.translate.bleu_score import corpus_bleu as nltk_corpus_bleu
from nltk.translate.bleu_score import modified_precision

from imcap.evaluation.bleu import bleu_scores
from imcap.evaluation.bleu_counts import corpus_bleu
from imcap.evaluation.bootstrap import (
    bleu4,
    cider,
    confidence_intervals,
    interval,
    resample_counts,
)
from imcap.evaluation.coco_metrics import CocoScorer
from imcap.evaluation.per_image import (
    BleuReferences,
    PerImageError,
    caption_table,
    read_table,
    write_table,
)

WORDS = ["a", "red", "blue", "circle", "square", "left", "right", "of", "the", "above", "two"]


def random_corpus(seed: int, images: int = 40, shortest: int = 1):
    """Captions of 1..11 words: some too short for 4-grams, some matching nothing."""
    rng = random.Random(seed)

    def sentence(low: int):
        return [rng.choice(WORDS) for _ in range(rng.randint(low, 11))]

    references = [[sentence(2) for _ in range(rng.randint(1, 5))] for _ in range(images)]
    hypotheses = [refs[0][: rng.randint(1, 6)] + sentence(shortest) if i % 2 else sentence(0)
                  for i, refs in enumerate(references)]
    return references, hypotheses


def table_of(references, hypotheses, cider_scores=None, mode="greedy"):
    images = [f"img{i}.jpg" for i in range(len(references))]
    scores = np.zeros(len(images)) if cider_scores is None else cider_scores
    return caption_table(images, references, {mode: hypotheses}, {mode: scores})


@pytest.mark.parametrize("seed", range(6))
def test_bleu_from_per_image_statistics_is_nltk_corpus_bleu_exactly(seed):
    references, hypotheses = random_corpus(seed)
    sums = BleuReferences(references).statistics(hypotheses).sum(axis=0)
    assert corpus_bleu(sums) == 100.0 * nltk_corpus_bleu(references, hypotheses)
    assert corpus_bleu(sums) == bleu_scores(references, hypotheses)["bleu4"]
    for n in range(1, 4):
        assert corpus_bleu(sums, order=n) == bleu_scores(references, hypotheses)[f"bleu{n}"]


@pytest.mark.filterwarnings("ignore::UserWarning")  # nltk's, on every zero n-gram precision
def test_zero_counts_are_handled_as_nltk_does():
    """No 4-gram match: nltk's float_info.min precision (BLEU ~1e-75, not 0); no unigram match
    or empty captions: exactly 0; a caption under 4 words counts one 4-gram."""
    refs = [[["a", "red", "circle", "left"]], [["two", "blue", "squares", "at", "top"]]]
    for hyps in ([["a", "red", "circle", "right"], ["two", "blue", "squares"]],
                 [["x", "y"], ["z"]], [[], []], [["a"], []]):
        sums = BleuReferences(refs).statistics(hyps).sum(axis=0)
        assert corpus_bleu(sums) == 100.0 * nltk_corpus_bleu(refs, hyps)
    stats = BleuReferences(refs).statistics([["a", "red"], []])
    assert stats[:, 4:8].tolist() == [[2, 1, 1, 1], [1, 1, 1, 1]]  # nltk's max(1, count)


def test_per_image_counts_are_nltk_modified_precision_and_closest_reference():
    references, hypotheses = random_corpus(11, images=15)
    stats = BleuReferences(references).statistics(hypotheses)
    for row, refs, hyp in zip(stats, references, hypotheses, strict=True):
        for n in range(1, 5):
            p = modified_precision(refs, hyp, n)
            assert (row[n - 1], row[3 + n]) == (p.numerator, p.denominator)
        assert row[8] == len(hyp)
        assert row[9] == min((len(r) for r in refs), key=lambda r: (abs(r - len(hyp)), r))


def test_mean_of_per_image_cider_is_the_reported_cider():
    references, hypotheses = random_corpus(3, shortest=4)
    with CocoScorer(meteor=False) as scorer:
        scores, per_image = scorer.score_images(references, hypotheses)
    assert per_image.shape == (len(hypotheses),)
    assert per_image.mean() == pytest.approx(scores["cider"], rel=1e-12)
    table = table_of(references, hypotheses, per_image)
    assert cider(table, np.ones((1, len(table))))[0] == pytest.approx(scores["cider"], rel=1e-12)


def test_resample_counts_draw_every_row_to_the_test_set_size_reproducibly():
    counts = resample_counts(300, resamples=1000, seed=1)
    assert counts.shape == (1000, 300)
    assert (counts.sum(axis=1) == 300).all() and (counts >= 0).all()
    assert 0.6 < (counts > 0).mean() < 0.66  # 1 − 1/e of the images in a resample
    assert np.array_equal(counts, resample_counts(300, resamples=1000, seed=1))
    assert not np.array_equal(counts, resample_counts(300, resamples=1000, seed=2))


def test_a_resample_is_the_corpus_score_of_the_drawn_images():
    references, hypotheses = random_corpus(5, shortest=4)
    table = table_of(references, hypotheses, np.arange(len(hypotheses), dtype=float))
    drawn = np.random.default_rng(0).integers(0, len(hypotheses), size=len(hypotheses))
    counts = np.bincount(drawn, minlength=len(hypotheses))[None, :].astype(float)
    expected = 100 * nltk_corpus_bleu([references[i] for i in drawn],
                                      [hypotheses[i] for i in drawn])
    assert bleu4(table, counts)[0] == pytest.approx(expected, rel=1e-12)
    assert cider(table, counts)[0] == pytest.approx(drawn.mean())


def test_interval_contains_the_point_estimate_and_is_reproducible():
    references, hypotheses = random_corpus(8, images=200, shortest=4)
    with CocoScorer(meteor=False) as scorer:
        scores, per_image = scorer.score_images(references, hypotheses)
    table = table_of(references, hypotheses, per_image)
    intervals = confidence_intervals(table)["greedy"]
    bleu = bleu_scores(references, hypotheses)["bleu4"]
    assert intervals["bleu4_ci_low"] < bleu < intervals["bleu4_ci_high"]
    assert intervals["cider_ci_low"] < scores["cider"] < intervals["cider_ci_high"]
    assert intervals == confidence_intervals(table)["greedy"]
    # wider for fewer images
    small = confidence_intervals(table_of(references[:50], hypotheses[:50], per_image[:50]))
    assert (small["greedy"]["bleu4_ci_high"] - small["greedy"]["bleu4_ci_low"]
            > intervals["bleu4_ci_high"] - intervals["bleu4_ci_low"])


def test_interval_is_the_central_percentiles():
    assert interval(np.arange(1001.0)) == pytest.approx((25.0, 975.0))
    assert interval(np.zeros(10)) == (0.0, 0.0)


def test_table_round_trips(tmp_path):
    references, hypotheses = random_corpus(2)
    hypotheses[0] = []  # an empty caption stays empty, not NaN
    table = table_of(references, hypotheses, np.random.default_rng(0).random(len(hypotheses)))
    write_table(tmp_path / "captions.csv", table)
    back = read_table(tmp_path / "captions.csv", "captions.csv")
    pd.testing.assert_frame_equal(back, table, rtol=1e-15)  # bit for bit with pandas >= 3
    assert back.loc[0, "caption"] == ""


def test_a_file_that_is_not_a_per_image_table_is_refused(tmp_path):
    (tmp_path / "samples.csv").write_text("image,caption\na.jpg,a red circle\n")
    with pytest.raises(PerImageError, match=r"samples.csv: not a per-image captions file "
                                            r"\(no column mode, cider"):
        read_table(tmp_path / "samples.csv", "samples.csv")
    references, hypotheses = random_corpus(2, images=3)
    table = table_of(references, hypotheses)
    write_table(tmp_path / "twice.csv", table.iloc[[0, 1, 1]])
    with pytest.raises(PerImageError, match=r"image img1\.jpg appears twice in mode greedy"):
        read_table(tmp_path / "twice.csv", "twice.csv")
