"""What an evaluate run shows in MLflow: a dozen headline metrics (BLEU-4 and CIDEr-D with their
intervals, greedy and the default beam); the full score table is an artifact
(tests/test_tracking.py::test_text_is_logged_as_an_artifact)."""

from __future__ import annotations

import pytest

from stages.evaluate import run_metrics

MODES = ("greedy", "beam1", "beam2", "beam3", "beam5")
METRICS = ("bleu1", "bleu4", "cider", "meteor", "rouge_l", "bleu4_ci_low", "bleu4_ci_high",
           "cider_ci_low", "cider_ci_high")


def test_the_run_metrics_are_the_headline_scores_only():
    scores = {mode: {name: float(i * 10 + j) for j, name in enumerate(METRICS)}
              for i, mode in enumerate(MODES)}
    metrics = run_metrics(scores, beam=3)
    assert sorted(metrics) == sorted(
        f"test_{mode}_{name}{bound}" for mode in ("greedy", "beam3") for name in ("bleu4", "cider")
        for bound in ("", "_ci_low", "_ci_high"))
    assert metrics["test_beam3_cider_ci_high"] == scores["beam3"]["cider_ci_high"]
    assert metrics["test_greedy_bleu4"] == scores["greedy"]["bleu4"]


@pytest.mark.parametrize("beam", [2, 5])
def test_the_headline_beam_is_the_one_asked(beam):
    scores = {mode: dict.fromkeys(METRICS, 1.0) for mode in MODES}
    assert f"test_beam{beam}_bleu4" in run_metrics(scores, beam)
