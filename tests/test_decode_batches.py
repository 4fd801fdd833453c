"""Captioning a split batch by batch (imcap.model.decoding_loop) gives what one batch would."""

from functools import partial

import torch
from test_decode import features, prefer, tiny_model

from imcap.data.vocab import EOS_ID, SPECIALS, Vocabulary
from imcap.features.splits import CaptionedSplit
from imcap.model.decode import greedy_decode
from imcap.model.decoding_loop import caption_batches

VOCAB = Vocabulary((*SPECIALS, *(f"w{i}" for i in range(14 - len(SPECIALS)))))


def test_batches_of_a_split_caption_like_one_batch():
    model = tiny_model("I")
    grid, pooled = features(5)
    split = CaptionedSplit(grid=grid, pooled=pooled, captions=torch.zeros(0, 3),
                           image_row=torch.zeros(0), references=[[]] * 5)
    greedy = partial(greedy_decode, model, max_length=6)
    batched = list(caption_batches(greedy, split.image_batches(2, torch.device("cpu")), VOCAB))
    tokens, alphas = greedy(grid, pooled)
    assert [c.words for c in batched] == [VOCAB.decode(ids) for ids in tokens.tolist()]
    assert [c.ended for c in batched] == [EOS_ID in ids for ids in tokens.tolist()]
    for caption, expected in zip(batched, alphas, strict=True):
        steps = len(caption.alphas)  # a batch is as long as its longest caption
        assert torch.allclose(caption.alphas, expected[:steps], atol=1e-6)
        assert not expected[steps:].any()  # nothing was cut off but PAD steps


def test_captions_that_stop_at_eos_are_marked_ended():
    model = tiny_model("none")
    prefer(model, EOS_ID)
    greedy = partial(greedy_decode, model, max_length=4)
    captions = list(caption_batches(greedy, [features(3)], VOCAB))
    assert [(c.words, c.ended, c.alphas) for c in captions] == [([], True, None)] * 3
