"""The self-critical reward (imcap.training.cider_reward) against pycocoevalcap's own scorers."""

import random

import numpy as np
import pytest
import torch
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider

from imcap.data.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from imcap.training.cider_reward import CaptionReward

VOCAB = 12  # few words: repeated n-grams (clipping) and shared ones (document frequency)


def word(i: int) -> str:
    return "<unk>" if i == UNK_ID else f"w{i}"


def references(images: int, seed: int = 0) -> list[list[list[int]]]:
    rng = random.Random(seed)
    return [[[rng.randrange(UNK_ID, VOCAB) for _ in range(rng.randint(1, 9))]
             for _ in range(rng.randint(1, 5))] for _ in range(images)]


def encoded(refs: list[list[list[int]]], width: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """`BOS w… EOS PAD…` rows and their images, as `CaptionedSplit` holds them (images in a
    shuffled order of captions)."""
    rows = [(i, [BOS_ID, *r, EOS_ID] + [PAD_ID] * (width - len(r) - 2))
            for i, rs in enumerate(refs) for r in rs]
    random.Random(1).shuffle(rows)
    return torch.tensor([r for _, r in rows]), torch.tensor([i for i, _ in rows])


def captions(count: int, seed: int, width: int = 14) -> tuple[torch.Tensor, list[list[int]]]:
    """Captions as the decoders return them: some ended by EOS, some cut, some empty."""
    rng = random.Random(seed)
    tokens = torch.full((count, width), PAD_ID)
    words = []
    for s in range(count):
        w = [rng.randrange(UNK_ID, VOCAB) for _ in range(rng.choice([0, 1, 2, 3, 4, 6, 9, 13]))]
        tokens[s, : len(w)] = torch.tensor(w, dtype=torch.long)
        if rng.random() < 0.8:
            tokens[s, len(w)] = EOS_ID
        words.append(w)
    return tokens, words


def pycoco(refs: list[list[list[int]]], hyps: dict[int, list[int]]
           ) -> tuple[np.ndarray, np.ndarray]:
    """pycocoevalcap's CIDEr-D and per-caption BLEU-4 of one caption per image (every image of
    `refs`, so that its document frequencies are those of all `refs`)."""
    gts = {i: [" ".join(map(word, r)) for r in rs] for i, rs in enumerate(refs)}
    res = {i: [" ".join(map(word, hyps[i]))] for i in gts}
    _, cider = Cider().compute_score(gts, res)
    _, bleu = Bleu(4).compute_score(gts, res, verbose=0)
    return np.asarray(cider), np.asarray(bleu[3])


def test_n_samples_per_image_score_as_pycocoevalcap_with_the_same_references():
    refs, n = references(9), 5
    reward = CaptionReward.from_references(*encoded(refs), VOCAB)
    tokens, words = captions(len(refs) * n, seed=2)
    cider, bleu4 = reward.scores(tokens, torch.arange(len(refs)).repeat_interleave(n))
    assert cider.dtype == torch.float64 and (cider > 0).any()
    for k in range(n):  # pycocoevalcap takes one caption per image: one call per sample
        rows = range(k, len(tokens), n)
        want_cider, want_bleu = pycoco(refs, {i: words[s] for i, s in enumerate(rows)})
        np.testing.assert_allclose(cider[k::n].numpy(), want_cider, rtol=0, atol=1e-6)
        np.testing.assert_allclose(bleu4[k::n].numpy(), want_bleu, rtol=0, atol=1e-6)
    combined = reward(tokens, torch.arange(len(refs)).repeat_interleave(n), bleu_weight=0.5)
    torch.testing.assert_close(combined, cider + 0.5 * bleu4)


def test_a_batch_of_some_images_uses_the_document_frequencies_of_all():
    refs = references(30, seed=3)
    reward = CaptionReward.from_references(*encoded(refs), VOCAB)
    images = torch.tensor([4, 17, 4, 29, 0])
    tokens, words = captions(len(images), seed=4)
    cider, _ = reward.scores(tokens, images)
    for s, image in enumerate(images.tolist()):
        hyps = {i: [] for i in range(len(refs))} | {image: words[s]}
        want, _ = pycoco(refs, hyps)
        assert cider[s].item() == pytest.approx(want[image], abs=1e-6)


def test_words_outside_every_reference_and_the_shapes_of_an_empty_batch():
    refs = [[[5, 6, 7]], [[5, 8]]]
    reward = CaptionReward.from_references(*encoded(refs), VOCAB)
    unseen = torch.tensor([[11, 10, 9, EOS_ID], [5, 8, EOS_ID, PAD_ID]])
    cider, bleu4 = reward.scores(unseen, torch.tensor([0, 1]))
    want, want_bleu = pycoco(refs, {0: [11, 10, 9], 1: [5, 8]})
    np.testing.assert_allclose(cider.numpy(), want, atol=1e-12)
    np.testing.assert_allclose(bleu4.numpy(), want_bleu, atol=1e-12)
    for width in (0, 1):
        cider, bleu4 = reward.scores(torch.full((3, width), PAD_ID), torch.tensor([0, 1, 1]))
        assert cider.tolist() == [0.0] * 3 and bleu4.shape == (3,)


def test_references_must_be_encoded_rows_covering_every_image():
    tokens, image = encoded([[[5, 6]], [[7]]])
    with pytest.raises(ValueError, match="BOS"):
        CaptionReward.from_references(tokens[:, 1:], image, VOCAB)
    with pytest.raises(ValueError, match="every image"):
        CaptionReward.from_references(tokens, image * 2, VOCAB)
    with pytest.raises(ValueError, match="too large"):
        CaptionReward.from_references(tokens, image, 60_000)
