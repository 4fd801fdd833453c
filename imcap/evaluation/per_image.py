"""Every test caption with the per-image statistics its corpus scores are made of, so that a
score can be resampled (imcap/evaluation/bootstrap.py) and two runs compared image by image
(`imcap compare`) without scoring anything again.

Corpus BLEU (nltk's `corpus_bleu`, the seed's metric) is a function of sums over images: for
each n-gram order n = 1..4 the clipped matches and the hypothesis n-gram count (nltk counts 1
for a caption shorter than n words), the caption length and its closest reference length.
`BleuReferences.statistics` gives those ten integers per image (counted by
imcap/evaluation/bleu_counts.py), whose `corpus_bleu` turns their sums back into nltk's exact
number, its handling of zero counts included. CIDEr-D is already a mean
of per-image scores (pycocoevalcap's, document frequencies from the evaluated references).

The table (`metrics/captions.csv`): one row per test image and decoding mode, with `image`,
`mode`, `caption`, `cider` (× 100), `matches1..4`, `ngrams1..4`, `length`, `ref_length`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd
import torch

from imcap.atomic import atomic_path
from imcap.evaluation.bleu_counts import BLEU_COLUMNS, NGRAMS, CaptionNgrams, WordIds

Tokens = Sequence[str]
COLUMNS = ("image", "mode", "caption", "cider", *BLEU_COLUMNS)
MAX_CIDER = 1000.0  # CIDEr-D × 100 of one image: 10 × a mean of clipped cosines ≤ 1
MAX_WORDS = 2**20  # a reference length beyond any caption; keeps weighted sums exact in float64


class PerImageError(ValueError):
    """A per-image captions file that is not one (missing columns, duplicate rows)."""


class BleuReferences:
    """The reference side of BLEU, counted once for all decoding modes
    (imcap/evaluation/bleu_counts.py)."""

    def __init__(self, references: Sequence[Sequence[Tokens]]) -> None:
        self.words = WordIds(references)
        self.table = self.words.references(references)

    def statistics(self, hypotheses: Sequence[Tokens]) -> np.ndarray:
        """[images, 10] int64 in the order of `BLEU_COLUMNS`, as nltk's `modified_precision`
        and `closest_ref_length` count them (n-gram counts at least 1)."""
        if len(hypotheses) != len(self.table.lengths):
            raise ValueError(f"{len(self.table.lengths)} reference sets for {len(hypotheses)} "
                             "hypotheses")
        words, lengths = self.words.encode(hypotheses)
        stats = self.table.statistics(CaptionNgrams.of(words, lengths, self.words.base),
                                      torch.arange(len(hypotheses)))
        stats[:, NGRAMS : 2 * NGRAMS].clamp_(min=1)  # nltk's denominator: at least 1
        return stats.numpy()


def caption_table(images: Sequence[str], references: Sequence[Sequence[Tokens]],
                  captions: Mapping[str, Sequence[Tokens]],
                  cider: Mapping[str, Sequence[float]]) -> pd.DataFrame:
    """One row per mode and image (modes in the order of `captions`), see the module doc.
    `cider[mode]`: pycocoevalcap's per-image CIDEr-D × 100, in the order of `images`."""
    bleu = BleuReferences(references)
    frames = []
    for mode, hypotheses in captions.items():
        if len(cider[mode]) != len(images) or len(hypotheses) != len(images):
            raise ValueError(f"{mode}: {len(hypotheses)} captions and {len(cider[mode])} "
                             f"CIDEr-D scores for {len(images)} images")
        frame = pd.DataFrame(bleu.statistics(hypotheses), columns=list(BLEU_COLUMNS))
        frame.insert(0, "image", list(images))
        frame.insert(1, "mode", mode)
        frame.insert(2, "caption", [" ".join(h) for h in hypotheses])
        frame.insert(3, "cider", np.asarray(cider[mode], dtype=np.float64))
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def write_table(path: Path, table: pd.DataFrame) -> None:
    """CSV, written atomically; floats in full (pandas ≥ 3 reads them back bit for bit)."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def read_table(source: str | Path | IO[str], name: str) -> pd.DataFrame:
    """A table written by `write_table`, checked: every value one the evaluate stage can write
    (`name` says where the table came from in errors)."""
    try:
        table = pd.read_csv(source, keep_default_na=False, dtype=str)
    except (ValueError, pd.errors.ParserError) as err:
        raise PerImageError(f"{name}: not a per-image captions file ({err})") from err
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise PerImageError(f"{name}: not a per-image captions file (no column "
                            f"{', '.join(missing)})")
    numbers = {c: pd.to_numeric(table[c], errors="coerce").astype(np.float64).to_numpy()
               for c in ("cider", *BLEU_COLUMNS)}
    _refuse_impossible(table, numbers, name)
    table["cider"] = numbers["cider"]
    for column in BLEU_COLUMNS:
        table[column] = numbers[column].astype(np.int64)
    twice = table.duplicated(["mode", "image"])
    if twice.any():
        row = table[twice].iloc[0]
        raise PerImageError(f"{name}: image {row['image']} appears twice in mode {row['mode']}")
    return table


def _refuse_impossible(table: pd.DataFrame, numbers: dict[str, np.ndarray], name: str) -> None:
    """A `PerImageError` naming the first row and column whose value no evaluated caption can
    have: no number, NaN or inf, a CIDEr-D outside 0..1000 (× 100; one image scores at most 10),
    a length other than the caption's words, n-gram counts other than nltk's for that length,
    more matches than n-grams, a reference length beyond `MAX_WORDS`."""
    def whole(values: np.ndarray, high: np.ndarray | float) -> np.ndarray:
        return (values >= 0) & (values <= high) & (values == np.floor(values))

    length = numbers["length"]
    words = np.where(table["caption"] == "", 0, table["caption"].str.count(" ") + 1)
    problems = {  # column -> (bad rows, why); checked in this order within a row
        "image": (table["image"].to_numpy() == "", "is empty"),
        "mode": (table["mode"].to_numpy() == "", "is empty"),
        "cider": (~((numbers["cider"] >= 0) & (numbers["cider"] <= MAX_CIDER)),
                  f"is not a CIDEr-D × 100 of one image (0 to {MAX_CIDER:g})"),
        "length": (length != words, "is not the number of words of the row's caption"),
    }
    for n in range(1, NGRAMS + 1):
        grams = np.maximum(0, length - n + 1)
        problems[f"ngrams{n}"] = (numbers[f"ngrams{n}"] != np.maximum(1, grams),
                                  f"is not nltk's {n}-gram count for the caption, "
                                  f"max(1, length − {n - 1})")
        problems[f"matches{n}"] = (~whole(numbers[f"matches{n}"], grams),
                                   f"is not a number of matched {n}-grams, 0 to the caption's")
    problems["ref_length"] = (~whole(numbers["ref_length"], MAX_WORDS),
                              f"is not a number of words, 0 to {MAX_WORDS}")
    wrong = np.logical_or.reduce([bad for bad, _ in problems.values()])
    if not wrong.any():
        return
    row = int(np.argmax(wrong))
    column = next(column for column, (bad, _) in problems.items() if bad[row])
    rows = int(wrong.sum())
    more = f"; {rows} rows hold such values" if rows > 1 else ""
    raise PerImageError(f"{name}: data row {row + 1} (line {row + 2}), column {column}: "
                        f"{table[column].iloc[row]!r} {problems[column][1]}{more} (not as the "
                        "evaluate stage writes it: damaged or edited?)")


def modes(table: pd.DataFrame) -> list[str]:
    """The decoding modes of `table`, in the order they appear."""
    return list(dict.fromkeys(table["mode"]))
