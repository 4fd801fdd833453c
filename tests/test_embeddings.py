"""Vector-file parsing (GloVe without header, fastText with), the embedding matrix, coverage,
the offline GloVe package, and frozen embeddings in training."""

from __future__ import annotations

import io
import socket
import zipfile
from collections import Counter

import numpy as np
import pytest
import torch
from params_overrides import cpu_training, merged

from imcap import params as params_module
from imcap.data.embeddings import (
    build_embedding_matrix,
    coverage,
    offline_glove_vectors,
)
from imcap.data.vectors import FoundVectors, VectorFileError, read_vectors, read_zip_vectors
from imcap.data.vocab import BOS_ID, EOS_ID, PAD_ID, SPECIALS, Vocabulary
from imcap.features.splits import CaptionedSplit
from imcap.model.decoder import DecoderConfig
from imcap.training.loop import train_decoder

GLOVE = b"the 0.1 0.2 0.3\ncat -1 2.5 3e-1\ndog 4 5 6\n"
# fastText: header, cased words, a space before every newline.
FASTTEXT = (b"5 3\n"
            b"Paris 1 1 1 \n"
            b"paris 2 2 2 \n"
            b"Berlin 3 3 3 \n"
            b"BERLIN 4 4 4 \n"
            b"caf\xc3\xa9 5 5 5 \n")


def _lines(data: bytes) -> list[bytes]:
    return io.BytesIO(data).readlines()


def test_headerless_glove_file_infers_its_dimension_and_keeps_only_wanted_words():
    found = read_vectors(_lines(GLOVE), {"cat", "the", "unicorn"}, "glove.txt")
    assert found.dim == 3
    assert set(found.rows) == {"the", "cat"}
    np.testing.assert_array_equal(found.rows["cat"], np.array([-1, 2.5, 0.3], np.float32))
    assert found.rows["cat"].dtype == np.float32


def test_header_file_cased_lookup_prefers_the_exact_word_then_the_first_lowercase_match():
    found = read_vectors(_lines(FASTTEXT), {"paris", "berlin", "café", "rome"}, "crawl.vec",
                         dim=3, cased=True)
    assert found.dim == 3
    assert found.rows["paris"].tolist() == [2, 2, 2]  # exact "paris", though "Paris" came first
    assert found.rows["berlin"].tolist() == [3, 3, 3]  # "Berlin", the first cased form
    assert found.rows["café"].tolist() == [5, 5, 5]
    assert "rome" not in found.rows


def test_header_line_is_not_taken_for_a_vector_and_exact_only_without_cased():
    found = read_vectors(_lines(FASTTEXT), {"berlin", "5"}, "crawl.vec")
    assert found.dim == 3
    assert found.rows == {}


def test_a_truncated_line_fails_naming_file_and_line():
    data = GLOVE + b"bird 7 8\n" + b"fish 1 2 3\n"
    with pytest.raises(VectorFileError, match=r"glove\.txt:4: expected a word and 3 numbers"):
        read_vectors(_lines(data), {"fish"}, "glove.txt")


def test_a_file_cut_in_the_middle_of_its_last_line_fails_inside_the_zip(tmp_path):
    archive = tmp_path / "crawl-300d-2M.vec.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("crawl-300d-2M.vec", FASTTEXT[:-5])
    with pytest.raises(VectorFileError) as err:
        read_zip_vectors(archive, "crawl-300d-2M.vec", {"paris"}, dim=3, cased=True)
    assert f"{archive}:crawl-300d-2M.vec:6:" in str(err.value)


def test_fewer_vectors_than_the_header_announces_fails():
    data = b"\n".join(FASTTEXT.split(b"\n")[:4]) + b"\n"
    with pytest.raises(VectorFileError, match=r"crawl\.vec:4: header announces 5 vectors, "
                                              r"the file has 3"):
        read_vectors(_lines(data), set(), "crawl.vec")


@pytest.mark.parametrize(("data", "dim", "message"), [
    (FASTTEXT, 300, r"x:1: header says 3 dimensions, expected 300"),
    (GLOVE, 300, r"x:1: expected a word and 300 numbers, found 4 fields"),
    (b"the 0.1 zero 0.3\n", None, r"x:1: not a number"),
    (b"a 1 2 3\nthe 0.1 nan 0.3\n", None, r"x:2: non-finite"),
    (b"", None, r"x: empty file"),
])
def test_malformed_files_fail_with_file_and_line(data, dim, message):
    with pytest.raises(VectorFileError, match=message):
        read_vectors(_lines(data), {"the"}, "x", dim=dim)


def test_missing_member_and_corrupt_archive_are_named(tmp_path):
    archive = tmp_path / "glove.6B.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("glove.6B.50d.txt", GLOVE)
    with pytest.raises(VectorFileError, match=r"no member 'glove.6B.300d.txt'.*glove.6B.50d"):
        read_zip_vectors(archive, "glove.6B.300d.txt", {"the"})
    archive.write_bytes(archive.read_bytes()[:40])
    with pytest.raises(VectorFileError, match=r"glove\.6B\.zip:glove\.6B\.50d\.txt: corrupt"):
        read_zip_vectors(archive, "glove.6B.50d.txt", {"the"})


VOCAB = Vocabulary((*SPECIALS, "a", "red", "zebra"))


def test_random_matrix_has_the_asked_width_and_a_zero_pad_row():
    matrix = build_embedding_matrix(VOCAB, None, dim=6, seed=1)
    assert matrix.shape == (7, 6) and matrix.dtype == np.float32
    assert not matrix[PAD_ID].any()
    np.testing.assert_array_equal(matrix, build_embedding_matrix(VOCAB, None, dim=6, seed=1))


def test_pretrained_rows_are_copied_and_missing_rows_drawn_at_their_scale():
    rng = np.random.default_rng(0)
    rows = {"a": rng.normal(5, 0.1, 4).astype(np.float32),
            "red": rng.normal(5, 0.1, 4).astype(np.float32)}
    matrix = build_embedding_matrix(VOCAB, FoundVectors(4, rows), dim=128, seed=0)
    assert matrix.shape == (7, 4)  # the vectors' width, not `dim`
    np.testing.assert_array_equal(matrix[4], rows["a"])
    np.testing.assert_array_equal(matrix[5], rows["red"])
    assert not matrix[PAD_ID].any()
    drawn = matrix[[BOS_ID, EOS_ID, 3, 6]]  # specials and "zebra": around 5, not around 0
    assert np.all(np.abs(drawn - 5) < 1) and len(np.unique(drawn, axis=0)) == 4


def test_no_vector_found_at_all_is_an_error():
    with pytest.raises(VectorFileError, match="none of the vocabulary"):
        build_embedding_matrix(VOCAB, FoundVectors(4, {}), dim=4, seed=0)


def test_coverage_counts_vocabulary_words_and_running_tokens():
    vectors = FoundVectors(2, {"a": np.zeros(2), "red": np.zeros(2), "rare": np.zeros(2)})
    tokens = Counter({"a": 6, "red": 2, "zebra": 1, "rare": 1})  # "rare" is not in VOCAB: UNK
    result = coverage(VOCAB, vectors, tokens)
    assert result.as_metrics() == {"words_found": 2, "vocab_coverage": round(2 / 3, 4),
                                   "token_coverage": 0.8}


def test_restricting_the_vocabulary_keeps_order_and_turns_the_rest_into_unk():
    restricted = VOCAB.restricted_to({"red", "zebra", "other"})
    assert restricted.words == (*SPECIALS, "red", "zebra")
    assert restricted.id("a") == VOCAB.id("<unk>")


def test_offline_glove_package_gives_the_real_vectors_without_network(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    found = offline_glove_vectors(["the", "circle", "qwxzv-not-a-word"])
    assert found.dim == 50
    assert set(found.rows) == {"the", "circle"}
    # The first values of "the" in Stanford's glove.6B.50d.txt.
    np.testing.assert_allclose(found.rows["the"][:3], [0.418, 0.24968, -0.41242])
    assert found.rows["the"].dtype == np.float32


def _tiny_split(n: int) -> CaptionedSplit:
    g = torch.Generator().manual_seed(n)
    grid = torch.randn(n, 2, 4, generator=g)
    captions = torch.tensor([[BOS_ID, 4 + i % 3, EOS_ID] for i in range(n)])
    return CaptionedSplit(grid=grid, pooled=grid.mean(dim=1), captions=captions,
                          image_row=torch.arange(n),
                          references=[[[VOCAB.words[4 + i % 3]]] for i in range(n)])


@pytest.mark.parametrize("freeze", [True, False])
def test_freeze_embeddings_reaches_the_decoder(tmp_path, freeze):
    embeddings = torch.randn(len(VOCAB), 4, generator=torch.Generator().manual_seed(0))
    config = DecoderConfig(vocab_size=len(VOCAB), embed_dim=4, encoder_channels=4,
                           projection_size=4, hidden_size=4, attention="none", attention_size=4,
                           dropout=0.0)
    settings = cpu_training(epochs=1, batch_size=8, learning_rate=0.1, patience=1,
                            max_length=3, freeze_embeddings=freeze)
    train_decoder(config, settings, embeddings, _tiny_split(16), _tiny_split(4), VOCAB,
                  tmp_path / "m.pt", seed=0)
    trained = torch.load(tmp_path / "m.pt", weights_only=True)["state_dict"]["embed.weight"]
    assert torch.equal(trained, embeddings) == freeze


@pytest.mark.parametrize(("raw", "message"), [
    ({"embeddings": "glove.840B"}, r"embeddings: unknown value 'glove.840B'; valid choices: "
                                   r"random, glove.6B.50d-offline, glove.6B.50d"),
    ({"word_vectors": {"glove_sha256": "abc"}},
     r"word_vectors.glove_sha256 must be empty or 64 hex"),
    ({"embeddings": "random", "vocab": {"restrict_to_embeddings": True}},
     r"restrict_to_embeddings needs pretrained embeddings"),
])
def test_embedding_params_are_validated_up_front(raw, message):
    with pytest.raises(params_module.ParamError, match=message):
        params_module.parse_params(merged(raw))
