"""The word-embedding matrix for a vocabulary (row i = vector of word i)."""

from __future__ import annotations

import numpy as np

from imcap.vocab import PAD_ID, Vocabulary


def build_embedding_matrix(kind: str, vocab: Vocabulary, dim: int, seed: int) -> np.ndarray:
    """`random`: N(0, 1) rows like `nn.Embedding`'s own initialisation, learned in training.

    The PAD row is zero so that padding contributes nothing even before training.
    """
    if kind != "random":
        raise ValueError(f"unknown embeddings {kind!r}; valid choices: random")
    matrix = np.random.default_rng(seed).standard_normal((len(vocab), dim)).astype(np.float32)
    matrix[PAD_ID] = 0.0
    return matrix
