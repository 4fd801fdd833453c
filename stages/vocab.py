"""DVC stage `vocab`: vocabulary, encoded captions, the embedding matrix and its coverage.

Coverage goes to `metrics/vocab.json` (a DVC metric); the train stage logs it to its MLflow run,
which keeps one MLflow run per trained model.
"""

from collections import Counter

import numpy as np

from imcap.atomic import atomic_path, prepare_outputs, write_json
from imcap.data.embeddings import build_embedding_matrix, coverage, load_vectors
from imcap.data.karpathy import load_dataset
from imcap.data.params import RANDOM, VocabStageParams
from imcap.data.vocab import SPECIALS, build_vocabulary, encode_dataset
from imcap.params_base import load_stage_params
from imcap.paths import CAPTION_FILE, CAPTIONS_FILE, EMBEDDINGS_FILE, VOCAB_FILE, VOCAB_METRICS


def main() -> None:
    params = load_stage_params(VocabStageParams)
    prepare_outputs(VOCAB_FILE, CAPTIONS_FILE, EMBEDDINGS_FILE, VOCAB_METRICS)
    dataset = load_dataset(CAPTION_FILE)
    train_captions = [c for image in dataset.split("train") for c in image.captions]
    vocab = build_vocabulary(train_captions, params.vocab.min_count)
    vectors = None
    if params.embeddings != RANDOM:
        vectors = load_vectors(params.embeddings, vocab.words[len(SPECIALS):], params.word_vectors)
        if params.vocab.restrict_to_embeddings:
            vocab = vocab.restricted_to(vectors.rows)
    encoded = encode_dataset(dataset, vocab, params.vocab.truncate_length)
    matrix = build_embedding_matrix(vocab, vectors, params.word_vectors.dim, params.seed)
    metrics: dict[str, int | float] = {"vocab_size": len(vocab), "embedding_dim": matrix.shape[1]}
    if vectors is not None:
        tokens = Counter(token for caption in train_captions for token in caption)
        metrics |= coverage(vocab, vectors, tokens).as_metrics()
    vocab.save(VOCAB_FILE)
    encoded.save(CAPTIONS_FILE)
    with atomic_path(EMBEDDINGS_FILE) as tmp, open(tmp, "wb") as f:
        np.save(f, matrix)
    write_json(VOCAB_METRICS, metrics)
    print(f"vocabulary: {len(vocab)} words (min_count {params.vocab.min_count}), "
          f"{len(encoded.tokens)} captions of {len(encoded.filenames)} images; embeddings "
          f"{params.embeddings} ({matrix.shape[1]}d)"
          + (f", {metrics['words_found']} words with a vector: {metrics['vocab_coverage']:.1%} "
             f"of the vocabulary, {metrics['token_coverage']:.1%} of training tokens"
             if vectors is not None else ""))


if __name__ == "__main__":
    from imcap.stage import run_stage

    run_stage("vocab", main)
