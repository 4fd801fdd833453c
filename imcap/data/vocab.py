"""Vocabulary and caption encoding.

Words seen at least `min_count` times in the training captions form the vocabulary, after the
specials PAD (0), BOS (1), EOS (2) and UNK (3). Captions become fixed-width rows
`BOS w1 ... wn EOS PAD ...`, truncated to `max_length` words.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imcap.atomic import atomic_path, write_json
from imcap.data.karpathy import CaptionDataset
from imcap.loading import read_output

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
PAD_ID, BOS_ID, EOS_ID, UNK_ID = range(4)


class EmptyVocabularyError(ValueError):
    """No training word is frequent enough to enter the vocabulary: the message says why."""


@dataclass(frozen=True)
class Vocabulary:
    words: tuple[str, ...]  # index -> word, specials first

    def __post_init__(self) -> None:
        if self.words[: len(SPECIALS)] != SPECIALS:
            raise ValueError(f"vocabulary must start with the specials {SPECIALS}")
        object.__setattr__(self, "_index", {w: i for i, w in enumerate(self.words)})

    def __len__(self) -> int:
        return len(self.words)

    def id(self, word: str) -> int:
        return self._index.get(word, UNK_ID)  # type: ignore[attr-defined]

    def encode(self, tokens: Sequence[str], max_length: int) -> list[int]:
        """`BOS w1..wn EOS`, words beyond `max_length` dropped (no padding)."""
        return [BOS_ID, *(self.id(t) for t in tokens[:max_length]), EOS_ID]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Words up to the first EOS; PAD and BOS skipped."""
        words = []
        for i in ids:
            i = int(i)
            if i == EOS_ID:
                break
            if i not in (PAD_ID, BOS_ID):
                words.append(self.words[i])
        return words

    def restricted_to(self, keep: Container[str]) -> Vocabulary:
        """The same vocabulary (order kept) without the words not in `keep`: they become UNK."""
        return Vocabulary(SPECIALS + tuple(w for w in self.words[len(SPECIALS):] if w in keep))

    def save(self, path: str | Path) -> None:
        write_json(path, {"words": list(self.words)})

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """The vocabulary `save` wrote; missing or damaged: an `OutputFileError` naming it."""
        def read(path: Path) -> Vocabulary:
            words = json.loads(path.read_text(encoding="utf-8"))
            words = words.get("words") if isinstance(words, dict) else None
            if not (isinstance(words, list) and all(isinstance(w, str) for w in words)):
                raise ValueError('expected {"words": [...]}')
            return cls(tuple(words))

        return read_output(path, read, stage="vocab")


def build_vocabulary(captions: Iterable[Sequence[str]], min_count: int) -> Vocabulary:
    """Words seen at least `min_count` times, most frequent first (ties alphabetical); none is
    an `EmptyVocabularyError`."""
    counts = Counter(token for caption in captions for token in caption
                     if token not in SPECIALS)
    kept = sorted((w for w, n in counts.items() if n >= min_count),
                  key=lambda w: (-counts[w], w))
    if not kept:
        top = max(counts.items(), key=lambda item: (item[1], item[0]), default=None)
        raise EmptyVocabularyError(
            f"vocab.min_count {min_count}: no word of the training captions is seen that often "
            f"(the most frequent, {top[0]!r}, {top[1]} times); lower vocab.min_count" if top else
            "the training captions hold no word")
    return Vocabulary(SPECIALS + tuple(kept))


@dataclass(frozen=True)
class EncodedCaptions:
    """Every caption of every image as token ids, plus which image (and split) it belongs to."""

    filenames: np.ndarray  # [N] str, dataset order
    splits: np.ndarray  # [N] str
    tokens: np.ndarray  # [M, max_length + 2] int64, PAD-filled
    image_index: np.ndarray  # [M] int64 into filenames

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, filenames=self.filenames, splits=self.splits,
                                tokens=self.tokens, image_index=self.image_index)

    @classmethod
    def load(cls, path: str | Path) -> EncodedCaptions:
        """The captions `save` wrote; missing or damaged: an `OutputFileError` naming it."""
        def read(path: Path) -> EncodedCaptions:
            keys = ("filenames", "splits", "tokens", "image_index")
            with np.load(path, allow_pickle=False) as data:
                if missing := [key for key in keys if key not in data.files]:
                    raise ValueError(f"no {', '.join(missing)} in it")
                return cls(**{key: data[key] for key in keys})

        return read_output(path, read, stage="vocab")

    def images_in(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.splits == split)


def load_embedding_matrix(path: str | Path) -> np.ndarray:
    """The embedding matrix [V, D] the vocab stage saved (`np.save`); missing or damaged: an
    `OutputFileError` naming it."""
    return read_output(path, lambda p: np.load(p, allow_pickle=False), stage="vocab")


def encode_dataset(dataset: CaptionDataset, vocab: Vocabulary, max_length: int) -> EncodedCaptions:
    rows, owners = [], []
    for i, image in enumerate(dataset.images):
        for caption in image.captions:
            rows.append(vocab.encode(caption, max_length))
            owners.append(i)
    tokens = np.full((len(rows), max_length + 2), PAD_ID, dtype=np.int64)
    for r, ids in enumerate(rows):
        tokens[r, : len(ids)] = ids
    return EncodedCaptions(
        filenames=np.array([image.filename for image in dataset.images]),
        splits=np.array([image.split for image in dataset.images]),
        tokens=tokens,
        image_index=np.array(owners, dtype=np.int64),
    )
