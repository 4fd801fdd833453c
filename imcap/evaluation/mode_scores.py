"""Every decoding mode's scores: BLEU the seed's way (nltk) and the COCO metrics, with the
CIDEr-D of each image.

The metrics computed in Python (nltk's BLEU, pycocoevalcap's BLEU, ROUGE-L and CIDEr-D) take
one core per mode; METEOR's Java process scores every mode in turn. Where cores allow, each mode's
Python metrics run in a process of their own (forked: the captions are not copied, and nothing
there touches torch) while this process feeds METEOR, so the modes cost about what the slowest
one does.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from itertools import repeat
from multiprocessing import get_context

import numpy as np

from imcap.evaluation.bleu import bleu_scores
from imcap.evaluation.coco_metrics import CocoScorer, text_scores

Tokens = Sequence[str]
Scores = dict[str, dict[str, float]]  # mode -> metric -> value


def mode_scores(references: Sequence[Sequence[Tokens]], hypotheses: Sequence[Tokens]
                ) -> tuple[dict[str, float], np.ndarray]:
    """One mode's nltk BLEU and Python COCO metrics, and its per-image CIDEr-D × 100."""
    coco, cider = text_scores(references, hypotheses)
    return bleu_scores(references, hypotheses) | coco, cider


def score_modes(references: Sequence[Sequence[Tokens]], captions: Mapping[str, Sequence[Tokens]],
                coco: CocoScorer, processes: int | None = None
                ) -> tuple[Scores, dict[str, np.ndarray]]:
    """Per mode (in the order of `captions`) its scores, METEOR last when it runs, and its
    per-image CIDEr-D × 100. `processes`: how many modes are scored at once (default: one per
    usable core, at most one per mode; 1 scores them here, one after the other)."""
    if processes is None:
        processes = min(len(captions), _usable_cpus())
    modes, hypotheses = list(captions), list(captions.values())
    pool = ProcessPoolExecutor(processes, mp_context=get_context("fork")) if processes > 1 \
        else None
    with pool or nullcontext():
        # the pool's map submits every mode at once; the builtin one scores them below, in turn
        results = (pool.map if pool else map)(mode_scores, repeat(references), hypotheses)
        meteor = [coco.meteor(references, h) for h in hypotheses]  # Java, meanwhile
        results = list(results)
    scores = {mode: result[0] | ({} if value is None else {"meteor": value})
              for mode, result, value in zip(modes, results, meteor, strict=True)}
    return scores, {mode: result[1] for mode, result in zip(modes, results, strict=True)}


def _usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
