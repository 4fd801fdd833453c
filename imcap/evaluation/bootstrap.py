"""95 % bootstrap intervals over test images, for one run's scores and for the difference of two
runs' scores on the same images (paired: both resampled with the same image indices).

A resample draws the test images with replacement; `resample_chunks` gives how often each image
is drawn, one row per resample, so a resampled corpus score is a weighted sum of the per-image
statistics of imcap/evaluation/per_image.py: corpus BLEU-4 from the weighted sums of its n-gram
counts (exactly nltk's formula), CIDEr-D as the weighted mean of the per-image scores (the
document frequencies stay those of the whole test set, the usual approximation). The seed is
fixed, so the same captions give the same interval in every run. The interval is the 2.5th to
97.5th percentile of the resampled scores (the percentile bootstrap).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial

import numpy as np
import pandas as pd

from imcap.evaluation.bleu_counts import BLEU_COLUMNS, corpus_bleu
from imcap.evaluation.per_image import modes

RESAMPLES = 1000
SEED = 20240518  # any fixed number: reproducible intervals
LEVEL = 0.95
CHUNK_CELLS = 2**22  # image counts drawn at once: 32 MiB per float64 array


def resample_chunks(images: int, resamples: int = RESAMPLES, seed: int = SEED
                    ) -> Iterator[np.ndarray]:
    """[rows, images] float64 arrays, one after the other `resamples` rows in all: how often
    each image is drawn in each resample (each row sums to `images`), from a generator seeded
    with `seed`. A chunk holds at most `CHUNK_CELLS` counts (at least one row), so memory stays
    bounded whatever the number of images; the rows are those of one draw of them all."""
    if images < 1:
        raise ValueError("no images to resample")
    rng = np.random.default_rng(seed)
    rows = max(1, CHUNK_CELLS // images)
    for start in range(0, resamples, rows):
        chunk = min(rows, resamples - start)
        drawn = rng.integers(0, images, size=(chunk, images))
        drawn += np.arange(chunk)[:, None] * images
        counts = np.bincount(drawn.ravel(), minlength=chunk * images)
        yield counts.reshape(chunk, images).astype(np.float64)


def resample_counts(images: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """All of `resample_chunks` as one [resamples, images] array (for few images)."""
    return np.concatenate(list(resample_chunks(images, resamples, seed)))


def resampled(images: int, score: Callable[[np.ndarray], np.ndarray],
              resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """`score(counts)` ([..., rows] for counts [rows, images]) of every resample, [...,
    resamples], computed chunk by chunk (`resample_chunks`)."""
    return np.concatenate([score(counts) for counts in resample_chunks(images, resamples, seed)],
                          axis=-1)


def bleu4(rows: pd.DataFrame, counts: np.ndarray) -> np.ndarray:
    """Corpus BLEU-4 × 100 of each resample (`counts` [R, images], rows in image order)."""
    stats = rows[list(BLEU_COLUMNS)].to_numpy(dtype=np.float64)
    sums = np.rint(counts @ stats).astype(np.int64)  # integers below 2**53: exact in float64
    return np.array([corpus_bleu(row) for row in sums.tolist()])


def cider(rows: pd.DataFrame, counts: np.ndarray) -> np.ndarray:
    """Mean per-image CIDEr-D × 100 of each resample."""
    return counts @ rows["cider"].to_numpy(dtype=np.float64) / counts.sum(axis=1)


# name in eval.json -> (name shown to people, the score of each resample)
METRICS: dict[str, tuple[str, Callable[[pd.DataFrame, np.ndarray], np.ndarray]]] = {
    "bleu4": ("BLEU-4", bleu4),
    "cider": ("CIDEr-D", cider),
}


def interval(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The central `level` percentile interval of `samples`."""
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def confidence_intervals(table: pd.DataFrame, resamples: int = RESAMPLES, seed: int = SEED
                         ) -> dict[str, dict[str, float]]:
    """`{mode: {"bleu4_ci_low": .., "bleu4_ci_high": .., "cider_ci_low": .., "cider_ci_high":
    ..}}` for a per-image table (`caption_table`), every mode resampled with the same image
    indices. One number per key: DVC leaves list values out of `dvc metrics show / diff` and
    `dvc exp show`."""
    result = {}
    images = None
    for mode in modes(table):
        rows = table[table["mode"] == mode]
        images = images or len(rows)
        if len(rows) != images:
            raise ValueError(f"{mode}: {len(rows)} images, other modes {images}")
        result[mode] = {}
        for name, (_, score) in METRICS.items():
            low, high = interval(resampled(images, partial(score, rows), resamples, seed))
            result[mode] |= {f"{name}_ci_low": low, f"{name}_ci_high": high}
    return result
