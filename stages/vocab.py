"""DVC stage `vocab`: vocabulary, encoded captions and the embedding matrix."""

import numpy as np

from imcap.atomic import atomic_path
from imcap.embeddings import build_embedding_matrix
from imcap.karpathy import load_dataset
from imcap.params import load_params
from imcap.paths import CAPTION_FILE, CAPTIONS_FILE, EMBEDDINGS_FILE, VOCAB_FILE
from imcap.vocab import build_vocabulary, encode_dataset


def main() -> None:
    params = load_params()
    dataset = load_dataset(CAPTION_FILE)
    train_captions = [c for image in dataset.split("train") for c in image.captions]
    vocab = build_vocabulary(train_captions, params.vocab.min_count)
    encoded = encode_dataset(dataset, vocab, params.vocab.max_length)
    matrix = build_embedding_matrix(params.embeddings, vocab, params.embedding.dim, params.seed)
    vocab.save(VOCAB_FILE)
    encoded.save(CAPTIONS_FILE)
    with atomic_path(EMBEDDINGS_FILE) as tmp, open(tmp, "wb") as f:
        np.save(f, matrix)
    print(f"vocabulary: {len(vocab)} words (min_count {params.vocab.min_count}), "
          f"{len(encoded.tokens)} captions of {len(encoded.filenames)} images")


if __name__ == "__main__":
    main()
