import numpy as np
import pytest

from imcap.data.karpathy import CaptionDataset, CaptionedImage
from imcap.data.text import tokenize
from imcap.data.vocab import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    SPECIALS,
    UNK_ID,
    EmptyVocabularyError,
    EncodedCaptions,
    Vocabulary,
    build_vocabulary,
    encode_dataset,
)


def test_tokenize_lowercases_and_drops_punctuation():
    assert tokenize("A Dog's toy, in the T-shirt!  (2 cats)") == [
        "a", "dog's", "toy", "in", "the", "t-shirt", "2", "cats"]
    assert tokenize("...") == []


def test_vocabulary_keeps_words_seen_min_count_times_after_the_specials():
    captions = [["a", "red", "circle"], ["a", "blue", "circle"], ["a", "red", "square"]]
    vocab = build_vocabulary(captions, min_count=2)
    assert vocab.words == (*SPECIALS, "a", "circle", "red")
    assert vocab.id("square") == UNK_ID


def test_a_vocabulary_without_a_word_says_why():
    """Not, later, that none of its words has a pretrained vector."""
    captions = [["a", "red", "circle"], ["a", "blue", "circle"], ["a"]]
    with pytest.raises(EmptyVocabularyError) as err:
        build_vocabulary(captions, min_count=10**9)
    assert str(err.value) == ("vocab.min_count 1000000000: no word of the training captions is "
                              "seen that often (the most frequent, 'a', 3 times); lower "
                              "vocab.min_count")
    with pytest.raises(EmptyVocabularyError, match=r"^the training captions hold no word$"):
        build_vocabulary([[], []], min_count=1)


def test_encode_decode_round_trip_with_truncation():
    vocab = Vocabulary((*SPECIALS, "a", "red", "circle"))
    ids = vocab.encode(["a", "red", "big", "circle"], max_length=3)
    assert ids == [BOS_ID, 4, 5, UNK_ID, EOS_ID]
    assert vocab.decode([*ids, PAD_ID]) == ["a", "red", "<unk>"]
    assert vocab.decode([4, EOS_ID, 5]) == ["a"]


def test_vocabulary_must_start_with_specials():
    with pytest.raises(ValueError, match="specials"):
        Vocabulary(("a", "b"))


def test_vocabulary_save_load(tmp_path):
    vocab = Vocabulary((*SPECIALS, "x"))
    vocab.save(tmp_path / "v.json")
    assert Vocabulary.load(tmp_path / "v.json") == vocab


def test_encoded_captions_align_with_images_and_splits(tmp_path):
    dataset = CaptionDataset("t", (
        CaptionedImage("a.jpg", 0, "train", (("a", "cat"), ("a", "dog")), ("", "")),
        CaptionedImage("b.jpg", 1, "test", (("a", "cat", "and", "a", "dog"),), ("",)),
    ))
    vocab = build_vocabulary([c for im in dataset.images for c in im.captions], 1)
    encoded = encode_dataset(dataset, vocab, max_length=4)
    assert encoded.tokens.shape == (3, 6)
    assert encoded.image_index.tolist() == [0, 0, 1]
    assert vocab.decode(encoded.tokens[2]) == ["a", "cat", "and", "a"]
    assert encoded.images_in("test").tolist() == [1]
    encoded.save(tmp_path / "c.npz")
    loaded = EncodedCaptions.load(tmp_path / "c.npz")
    assert np.array_equal(loaded.tokens, encoded.tokens)
    assert loaded.filenames.tolist() == ["a.jpg", "b.jpg"]
