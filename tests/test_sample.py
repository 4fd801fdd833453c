"""Batched sampling with log-probabilities (imcap.model.sample), for every decoder."""

import pytest
import torch
from test_decode import features, prefer, tiny_model

from imcap.data.vocab import BOS_ID, EOS_ID, PAD_ID
from imcap.model.sample import caption_logprobs, sample_captions

KINDS = ["none", "I", "II", "transformer"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("min_length", [0, 2])
def test_sampled_log_probabilities_equal_the_teacher_forced_forward(kind, min_length):
    model, n = tiny_model(kind), 4
    grid, pooled = features(3)
    drawn = sample_captions(model, grid, pooled, n, max_length=6, min_length=min_length,
                            generator=torch.Generator().manual_seed(0))
    owner = torch.arange(3).repeat_interleave(n)
    forced = caption_logprobs(model, grid, pooled, drawn.tokens, owner, min_length=min_length)
    torch.testing.assert_close(drawn.logprobs, forced, rtol=0, atol=1e-5)
    assert drawn.logprobs.requires_grad and forced.requires_grad
    # Both carry gradients to the decoder's weights, equal ones.
    first = torch.autograd.grad(drawn.logprobs.sum(), model.out.weight)[0]
    second = torch.autograd.grad(forced.sum(), model.out.weight)[0]
    torch.testing.assert_close(first, second, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_samples_end_at_eos_with_pad_and_zero_log_probability_after(kind):
    model = tiny_model(kind)
    drawn = sample_captions(model, *features(5), 3, max_length=5, min_length=1,
                            generator=torch.Generator().manual_seed(1))
    tokens, mask = drawn.tokens, drawn.mask
    assert tokens.shape[0] == 15 and tokens.shape[1] <= 6 and mask.any(dim=0)[-1]
    assert not ((tokens == BOS_ID).any() or (tokens[:, 0] == EOS_ID).any())
    ended = torch.cumsum((tokens == EOS_ID).int(), dim=1)
    after = (ended - (tokens == EOS_ID).int()) > 0  # positions past an EOS
    assert (tokens[after] == PAD_ID).all() and ((tokens == PAD_ID) == ~mask).all()
    assert (drawn.logprobs[~mask] == 0).all() and (drawn.logprobs[mask] < 0).all()
    assert (ended[:, -1] <= 1).all()
    # Captions that never end are cut after max_length words, the cut step not counted.
    assert (mask.sum(dim=1) <= 6).all() and ((mask.sum(dim=1) == 6) <= (ended[:, -1] == 1)).all()


@pytest.mark.parametrize("kind", KINDS)
def test_rows_b_n_to_b_n_plus_n_are_image_bs(kind):
    model, n = tiny_model(kind), 3
    grid, pooled = features(4)
    with torch.no_grad():
        drawn = sample_captions(model, grid, pooled, n, max_length=4,
                                generator=torch.Generator().manual_seed(2))
        owner = torch.arange(4).repeat_interleave(n)
        right = caption_logprobs(model, grid, pooled, drawn.tokens, owner)
        wrong = caption_logprobs(model, grid, pooled, drawn.tokens, owner.roll(n))
    assert drawn.tokens.shape[0] == 4 * n
    torch.testing.assert_close(drawn.logprobs, right, rtol=0, atol=1e-5)
    assert (wrong - right).abs().max() > 1e-3
    prefer(model, 7)  # the most likely word everywhere: every row draws it
    with torch.no_grad():
        certain = sample_captions(model, grid, pooled, n, max_length=4)
    assert (certain.tokens[:, :4] == 7).all() and (certain.logprobs[:, :4].abs() < 1e-4).all()


def test_bad_arguments():
    model = tiny_model("I")
    with pytest.raises(ValueError, match="n must be"):
        sample_captions(model, *features(2), 0, max_length=3)
    with pytest.raises(ValueError, match="max_length"):
        sample_captions(model, *features(2), 2, max_length=0)
