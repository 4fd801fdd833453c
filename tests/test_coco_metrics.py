"""COCO caption metrics (imcap.evaluation.coco_metrics) against nltk and hand-checked values."""

import random
import shutil

import numpy as np
import pytest

from imcap.evaluation import coco_metrics
from imcap.evaluation.bleu import bleu_scores
from imcap.evaluation.coco_metrics import CocoScorer

WORDS = ["a", "red", "blue", "circle", "square", "left", "right", "of", "the", "above", "two"]


def random_corpus(seed: int, images: int = 40):
    rng = random.Random(seed)

    def sentence(shortest: int):
        return [rng.choice(WORDS) for _ in range(rng.randint(shortest, 11))]

    references = [[sentence(1) for _ in range(rng.randint(1, 5))] for _ in range(images)]
    # Half the hypotheses start with a reference, so every n-gram order has matches; all
    # have >= 4 words (see test_where_the_two_bleus_differ_by_design).
    hypotheses = [refs[0] + sentence(3) if i % 2 else sentence(4)
                  for i, refs in enumerate(references)]
    return references, hypotheses


@pytest.mark.parametrize("seed", range(5))
def test_coco_bleu_equals_nltk_corpus_bleu_on_identical_tokens(seed):
    references, hypotheses = random_corpus(seed)
    with CocoScorer(meteor=False) as scorer:
        coco = scorer.score(references, hypotheses)
    nltk = bleu_scores(references, hypotheses)
    assert nltk["bleu4"] > 1  # a real test: all four n-gram orders have matches
    for n in range(1, 5):
        assert coco[f"coco_bleu{n}"] == pytest.approx(nltk[f"bleu{n}"], abs=1e-6)


def test_where_the_two_bleus_differ_by_design():
    """nltk counts one n-gram in the denominator of a hypothesis shorter than n words, and a
    zero n-gram precision makes its BLEU 0; pycocoevalcap counts none, and smooths zeros."""
    refs = [[["a", "red", "circle", "left"]], [["two", "blue", "squares", "at", "top"]]]
    short = [["a", "red", "circle", "left"], ["two", "blue", "squares"]]
    with CocoScorer(meteor=False) as scorer:
        coco = scorer.score(refs, short)
        no_4gram = scorer.score(refs[:1], [["a", "red", "circle", "right"]])
    nltk = bleu_scores(refs, short)
    assert coco["coco_bleu3"] == pytest.approx(nltk["bleu3"], abs=1e-6)
    assert coco["coco_bleu4"] > nltk["bleu4"] + 1  # 1/1 vs 1/2 four-gram precision
    assert bleu_scores(refs[:1], [["a", "red", "circle", "right"]])["bleu4"] < 1e-9
    assert 0 < no_4gram["coco_bleu4"] < 0.1


def test_perfect_captions_score_100_on_bleu_and_rouge():
    references, _ = random_corpus(7, images=10)
    with CocoScorer(meteor=False) as scorer:
        scores = scorer.score(references, [refs[0] for refs in references])
    for name in ("coco_bleu1", "coco_bleu2", "coco_bleu3", "coco_bleu4", "rouge_l"):
        assert scores[name] == pytest.approx(100.0)
    assert scores["cider"] > 100  # CIDEr-D × 100 is not bounded by 100


def test_rouge_l_and_cider_by_hand():
    """ROUGE-L with β = 1.2 from the longest common subsequence; CIDEr-D of a caption that
    matches nothing is 0, and of one matching its reference exactly is the highest."""
    refs = [[["a", "red", "circle", "on", "the", "left"]], [["two", "blue", "squares"]]]
    with CocoScorer(meteor=False) as scorer:
        scores = scorer.score(refs, [["a", "circle", "left"], ["two", "blue", "squares"]])
        none_match = scorer.score(refs, [["x", "y"], ["z"]])
    precision, recall, beta = 3 / 3, 3 / 6, 1.2
    rouge_first = (1 + beta**2) * precision * recall / (recall + beta**2 * precision)
    assert scores["rouge_l"] == pytest.approx(100 * (rouge_first + 1.0) / 2)
    assert none_match["cider"] == pytest.approx(0.0) and none_match["rouge_l"] == 0.0
    assert scores["cider"] > none_match["cider"]


@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs Java")
def test_meteor_runs_in_java_and_rewards_better_captions():
    references, hypotheses = random_corpus(3, images=12)
    with CocoScorer() as scorer:
        perfect = scorer.score(references, [refs[0] for refs in references])
        rough = scorer.score(references, hypotheses)
    assert scorer.skipped == {}
    assert 0 < rough["meteor"] < perfect["meteor"] <= 100


@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs Java")
def test_an_interruption_while_meteor_scores_leaves_nothing_to_wait_for(monkeypatch):
    """Interrupted inside pycocoevalcap's scoring (the stage's SIGTERM), its lock stays held,
    and its `__del__` waited for it forever: an evaluate stage that never ended."""
    scorer = CocoScorer(meteor=True)
    meteor = scorer._meteor

    class Interrupted:  # the Java process's output, read when the interruption lands
        def __init__(self, stream):
            self.stream = stream

        def readline(self) -> bytes:
            raise KeyboardInterrupt

        def close(self) -> None:
            self.stream.close()

    monkeypatch.setattr(meteor.meteor_p, "stdout", Interrupted(meteor.meteor_p.stdout))
    with pytest.raises(KeyboardInterrupt), scorer:
        scorer.score([[["a", "red", "circle"]]], [["a", "red", "circle"]])
    assert not meteor.lock.locked() and meteor.meteor_p.poll() is not None


@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs Java")
def test_meteor_sends_every_image_before_reading_an_answer_and_scores_as_pycocoevalcap():
    """One round trip per image kept the Java process waiting for each next line; pipelined,
    the images go out together and the number is the same."""
    from pycocoevalcap.meteor.meteor import Meteor

    references, hypotheses = random_corpus(4, images=30)
    gts = {i: [" ".join(r) for r in refs] for i, refs in enumerate(references)}
    res = {i: [" ".join(h)] for i, h in enumerate(hypotheses)}
    reference = Meteor()
    try:
        expected, _ = reference.compute_score(gts, res)
    finally:
        reference.__del__()
    sent = [0]  # SCORE lines handed to the Java process so far
    seen: list[int] = []  # how many had been, as each answer arrived
    scorer = CocoScorer(meteor=True)
    process = scorer._meteor.meteor_p

    class Recorded:
        def __init__(self, stream):
            self.stream = stream

        def write(self, data: bytes) -> int:
            sent[0] += data.count(b"SCORE")  # counted before Java can answer any of them
            return self.stream.write(data)

        def readline(self) -> bytes:
            line = self.stream.readline()
            seen.append(sent[0])
            return line

        def __getattr__(self, name):
            return getattr(self.stream, name)

    process.stdin, process.stdout = Recorded(process.stdin), Recorded(process.stdout)
    with scorer:
        assert scorer.score(references, hypotheses)["meteor"] == pytest.approx(100 * expected,
                                                                               abs=1e-12)
    assert seen[0] == len(references)  # one round trip per image: 1


def test_meteor_is_skipped_not_failed_without_java(monkeypatch):
    monkeypatch.setattr(coco_metrics.shutil, "which", lambda name: None)
    references, hypotheses = random_corpus(1, images=5)
    with CocoScorer() as scorer:
        scores = scorer.score(references, hypotheses)
    assert "meteor" not in scores and "cider" in scores
    assert scorer.skipped == {"meteor": "java not found on PATH"}


def test_mismatched_or_empty_inputs_are_errors():
    with CocoScorer(meteor=False) as scorer:
        with pytest.raises(ValueError, match="1 reference sets for 2 hypotheses"):
            scorer.score([[["a"]]], [["a"], ["b"]])
        with pytest.raises(ValueError, match="no captions"):
            scorer.score([], [])


@pytest.mark.parametrize("meteor", [False, pytest.param(True, marks=pytest.mark.skipif(
    shutil.which("java") is None, reason="METEOR needs Java"))])
def test_modes_scored_in_parallel_processes_score_exactly_as_one_after_the_other(meteor):
    from imcap.evaluation.scoring import score_modes

    references, _ = random_corpus(5, images=30)
    captions = {f"mode{seed}": random_corpus(seed, images=30)[1] for seed in range(3)}
    with CocoScorer(meteor=meteor) as coco:
        apart, apart_cider = score_modes(references, captions, coco, processes=3)
        together, together_cider = score_modes(references, captions, coco, processes=1)
        expected = {mode: bleu_scores(references, h) | coco.score(references, h)
                    for mode, h in captions.items()}
    assert apart == together == expected
    assert [list(s) for s in apart.values()] == [list(s) for s in expected.values()]  # key order
    assert all(np.array_equal(apart_cider[m], together_cider[m]) for m in captions)
    assert ("meteor" in apart["mode0"]) == meteor
