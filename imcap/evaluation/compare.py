"""`imcap compare A B`: the test scores of two evaluated models, or of two settings given as
several runs each (seeds), side by side: per metric and decoding mode B − A with its 95 %
interval, a p-value corrected for the number of rows, and a verdict worded for what it tests.

Nothing is scored again: every run's per-image statistics (imcap/evaluation/per_image.py) are
resampled with the same image indices (imcap/evaluation/bootstrap.py).
- One run per side: B − A with its paired percentile bootstrap interval; p is twice the smaller
  share of resampled differences on either side of 0. That says whether these two trained models
  differ on test images like these, not whether their settings do: two seeds of one setting can
  differ that much.
- Several runs on a side: the difference of the means over runs. Its variance is the test
  images' (the bootstrap's, all runs resampled with the same images) plus the seeds'
  (s² (1/k_A + 1/k_B), s² pooled from the runs' scores of each side); interval and p are
  Student's t with Welch–Satterthwaite's degrees of freedom (k_A + k_B − 2 for the seeds' part).
Holm's step-down correction over every row of the table keeps the chance of any false verdict
below 5 %: a verdict names a side only where its corrected p is below 0.05.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from imcap.evaluation.bootstrap import LEVEL, METRICS, RESAMPLES, SEED, interval, resampled
from imcap.evaluation.compare_sides import CompareError, load_runs
from imcap.evaluation.per_image import modes

# Score points below which a difference is none: nltk scores a zero n-gram precision as the
# smallest float, so a BLEU-4 "of 0" is ~1e-75 and two of them differ by about that much.
NEGLIGIBLE = 1e-9
Runs = pd.DataFrame | Sequence[pd.DataFrame]  # one run's per-image table, or several runs'


@dataclass(frozen=True)
class Difference:
    metric: str  # as people read it: BLEU-4, CIDEr-D
    mode: str  # greedy, beam3, ...
    a: float  # the mean over A's runs
    b: float
    low: float  # the interval of b − a
    high: float
    p: float  # Holm-corrected over the rows compared together
    seeds: bool  # several runs on a side: the interval includes the spread between them
    alpha: float = 1 - LEVEL

    @property
    def diff(self) -> float:
        return self.b - self.a

    @property
    def verdict(self) -> str:
        scope = "over seeds, on these test images" if self.seeds else "on these test images"
        if self.p < self.alpha and abs(self.diff) > NEGLIGIBLE:
            return f"{'B' if self.diff > 0 else 'A'} better {scope}"
        return f"no detectable difference {scope}"


def as_runs(side: Runs) -> list[pd.DataFrame]:
    return [side] if isinstance(side, pd.DataFrame) else list(side)


def _rows(table: pd.DataFrame, mode: str) -> pd.DataFrame:
    return table[table["mode"] == mode].set_index("image")


def aligned(a: Runs, b: Runs) -> dict[str, tuple[list[pd.DataFrame], list[pd.DataFrame]]]:
    """Per mode every run holds: A's runs' rows and B's, all in the first A run's image order.
    An error unless every run scored the very same test images."""
    runs = {"A": as_runs(a), "B": as_runs(b)}
    labelled = [(f"{side}{i + 1}" if len(tables) > 1 else side, table)
                for side, tables in runs.items() for i, table in enumerate(tables)]
    common = [mode for mode in modes(runs["A"][0])
              if all(mode in set(modes(table)) for _, table in labelled)]
    if not common:
        raise CompareError("no decoding mode in common: " + ", ".join(
            f"{label} has {', '.join(modes(table)) or 'none'}" for label, table in labelled))
    pairs = {}
    for mode in common:
        (first_label, first), *others = [(label, _rows(table, mode)) for label, table in labelled]
        for label, rows in others:
            only_first = first.index.difference(rows.index)
            only_other = rows.index.difference(first.index)
            if len(only_first) or len(only_other):
                example = ", ".join(f"{only[0]} only in {side}" for only, side in
                                    ((only_first, first_label), (only_other, label)) if len(only))
                raise CompareError(
                    f"{first_label} and {label} were not scored on the same test images ({mode}: "
                    f"{len(first)} and {len(rows)} images, {len(only_first)} only in "
                    f"{first_label}, {len(only_other)} only in {label}; e.g. {example}): compare "
                    "models evaluated on the same dataset and split")
        tables = [first] + [rows.loc[first.index] for _, rows in others]
        pairs[mode] = tables[: len(runs["A"])], tables[len(runs["A"]):]
    return pairs


def bootstrap_p(samples: np.ndarray) -> float:
    """Two-sided: twice the smaller share of resampled differences at or beyond 0 on either
    side (the smallest 1 − level whose percentile interval leaves 0 out)."""
    below = float(np.mean(samples <= NEGLIGIBLE))
    above = float(np.mean(samples >= -NEGLIGIBLE))
    return min(1.0, 2 * min(below, above))


def holm(p: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given."""
    adjusted, running = [0.0] * len(p), 0.0
    for rank, i in enumerate(sorted(range(len(p)), key=lambda i: p[i])):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def _interval_and_p(scores_a: np.ndarray, scores_b: np.ndarray, samples: np.ndarray,
                    level: float) -> tuple[float, float, float]:
    """(low, high, p) of the difference of the means over runs (see the module doc)."""
    diff = float(scores_b.mean() - scores_a.mean())
    seed_df = len(scores_a) + len(scores_b) - 2
    if seed_df == 0:
        return *interval(samples, level), bootstrap_p(samples)
    pooled = (((scores_a - scores_a.mean()) ** 2).sum()
              + ((scores_b - scores_b.mean()) ** 2).sum()) / seed_df
    seeds = pooled * (1 / len(scores_a) + 1 / len(scores_b))
    images = float(np.var(samples, ddof=1)) if len(samples) > 1 else 0.0
    spread = math.sqrt(seeds + images)
    df = (seeds + images) ** 2 / (seeds**2 / seed_df) if seeds > 0 else math.inf
    half = float(stats.t.ppf(0.5 + level / 2, df)) * spread
    if abs(diff) <= NEGLIGIBLE:
        p = 1.0
    else:
        p = float(2 * stats.t.sf(abs(diff) / spread, df)) if spread > 0 else 0.0
    return diff - half, diff + half, p


def compare(a: Runs, b: Runs, resamples: int = RESAMPLES, seed: int = SEED,
            level: float = LEVEL) -> list[Difference]:
    """B − A per metric and mode (see the module doc)."""
    found = []
    for mode, (runs_a, runs_b) in aligned(a, b).items():
        images = len(runs_a[0])
        whole = np.ones((1, images))

        def mean_differences(counts: np.ndarray, runs_a=runs_a, runs_b=runs_b) -> np.ndarray:
            return np.stack([np.mean([score(r, counts) for r in runs_b], axis=0)
                             - np.mean([score(r, counts) for r in runs_a], axis=0)
                             for _, score in METRICS.values()])

        samples = resampled(images, mean_differences, resamples, seed)
        for (label, score), metric_samples in zip(METRICS.values(), samples, strict=True):
            scores_a = np.array([score(r, whole)[0] for r in runs_a])
            scores_b = np.array([score(r, whole)[0] for r in runs_b])
            found.append((label, mode, scores_a, scores_b,
                          _interval_and_p(scores_a, scores_b, metric_samples, level)))
    corrected = holm([p for *_, (_, _, p) in found])
    differences = [Difference(label, mode, float(sa.mean()), float(sb.mean()), low, high, p,
                              seeds=len(sa) + len(sb) > 2, alpha=1 - level)
                   for (label, mode, sa, sb, (low, high, _)), p in zip(found, corrected,
                                                                      strict=True)]
    order = {label: i for i, (label, _) in enumerate(METRICS.values())}
    return sorted(differences, key=lambda d: order[d.metric])  # each metric's modes together


def report(differences: list[Difference], a: Runs, b: Runs, names: tuple[str, str],
           resamples: int = RESAMPLES, level: float = LEVEL) -> str:
    """The comparison as a plain-text table, with the modes only some runs have and what the
    verdicts test."""
    runs_a, runs_b = as_runs(a), as_runs(b)
    images = len(_rows(runs_a[0], differences[0].mode))
    percent = f"{100 * level:g}%"
    if differences[0].seeds:
        lines = [f"A = {names[0]} ({len(runs_a)} runs), B = {names[1]} ({len(runs_b)} runs): "
                 f"{images} test images; A, B: means over runs; {percent} intervals of B − A "
                 f"over seeds and {resamples} paired bootstrap resamples of the test images"]
    else:
        lines = [f"A = {names[0]}, B = {names[1]}: {images} test images, {resamples} paired "
                 f"bootstrap resamples, {percent} intervals of B − A"]
    lines.append(f"{'metric':<8} {'mode':<8} {'A':>7} {'B':>7} {'B − A':>7}  "
                 f"{f'{percent} interval':<18}  {'p (Holm)':>8}  verdict")

    def signed(x: float) -> str:
        return f"{0.0 if abs(x) < NEGLIGIBLE else x:+.2f}"

    for d in differences:
        p = "<0.001" if d.p < 0.001 else f"{d.p:.3f}"
        lines.append(f"{d.metric:<8} {d.mode:<8} {d.a:7.2f} {d.b:7.2f} {signed(d.diff):>7}  "
                     f"{f'[{signed(d.low)}, {signed(d.high)}]':<18}  {p:>8}  {d.verdict}")
    compared = {d.mode for d in differences}
    for side, tables in (("A", runs_a), ("B", runs_b)):
        alone = [mode for mode in dict.fromkeys(m for t in tables for m in modes(t))
                 if mode not in compared]
        if alone:
            lines.append(f"only in {side} (not compared): {', '.join(alone)}")
    lines.append(f"p: Holm-corrected over the {len(differences)} rows; a verdict names a side "
                 f"where p < {1 - level:g}.")
    if not differences[0].seeds:
        lines.append("One run per side: this compares two trained models, not their settings "
                     "(two seeds of one setting can differ too); to compare settings, give each "
                     "side several runs, e.g. `imcap compare a1,a2,a3 b1,b2,b3`.")
    return "\n".join(lines)


def compare_command(a: str, b: str, root: Path, html: Path | None = None,
                    html_mode: str | None = None, html_images: int = 20) -> str:
    """`imcap compare A B`'s output; with `html`, also the page of the images where A and B
    differ most (imcap/evaluation/compare_page.py)."""
    runs_a, runs_b = load_runs(a, root), load_runs(b, root)
    differences = compare(runs_a, runs_b)
    text = report(differences, runs_a, runs_b, names=(a, b))
    if html is None:
        return text
    from imcap.evaluation.compare_page import write_page

    shown = write_page(html, text, aligned(runs_a, runs_b), (a, b), root, html_mode, html_images)
    return f"{text}\n{shown}"
