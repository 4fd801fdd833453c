"""Sampling n captions per image (imcap.model.decode.sample_decode, the one sampler) and their
log-probabilities from a teacher-forced forward (imcap.model.sample), for every decoder."""

import pytest
import torch
from test_decode import features, prefer, tiny_model

from imcap.data.vocab import BOS_ID, EOS_ID, PAD_ID
from imcap.model.decode import mask_specials, sample_decode
from imcap.model.sample import caption_logprobs

KINDS = ["none", "I", "II", "transformer", "updown"]


def stepwise_logprobs(model, grid, pooled, tokens, n):
    """Each token's log-probability under the sampling rules, one decoding step at a time."""
    state = model.start(grid, pooled).repeat(n)
    current = torch.full((len(tokens),), BOS_ID)
    columns = []
    for step in range(tokens.size(1)):
        logits, state, _ = model.step(current, state)
        logp = torch.log_softmax(mask_specials(logits.float(), step, 0), dim=1)
        columns.append(logp.gather(1, tokens[:, step:step + 1]).squeeze(1))
        current = tokens[:, step].clamp(min=EOS_ID)  # past the end: any word, masked below
    return torch.stack(columns, dim=1).masked_fill(tokens == PAD_ID, 0.0)


@pytest.mark.parametrize("kind", KINDS)
def test_the_teacher_forced_log_probabilities_are_the_sampling_steps(kind):
    model, n = tiny_model(kind), 4
    grid, pooled = features(3)
    drawn, _ = sample_decode(model, grid, pooled, max_length=6, n=n,
                             generator=torch.Generator().manual_seed(0))
    owner = torch.arange(3).repeat_interleave(n)
    forced = caption_logprobs(model, grid, pooled, drawn, owner)
    stepwise = stepwise_logprobs(model, grid, pooled, drawn, n)
    torch.testing.assert_close(forced, stepwise, rtol=0, atol=1e-5)
    assert forced.requires_grad and not drawn.requires_grad
    # Both carry the same gradients to the decoder's weights.
    first = torch.autograd.grad(forced.sum(), model.out.weight)[0]
    second = torch.autograd.grad(stepwise.sum(), model.out.weight)[0]
    torch.testing.assert_close(first, second, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_samples_end_at_eos_with_pad_and_zero_log_probability_after(kind):
    model = tiny_model(kind)
    grid, pooled = features(5)
    drawn, _ = sample_decode(model, grid, pooled, max_length=5, n=3, min_length=1,
                             generator=torch.Generator().manual_seed(1))
    mask = drawn != PAD_ID
    assert drawn.shape[0] == 15 and drawn.shape[1] <= 6 and mask.any(dim=0)[-1]
    assert not ((drawn == BOS_ID).any() or (drawn[:, 0] == EOS_ID).any())
    ended = torch.cumsum((drawn == EOS_ID).int(), dim=1)
    after = (ended - (drawn == EOS_ID).int()) > 0  # positions past an EOS
    assert (drawn[after] == PAD_ID).all() and (ended[:, -1] <= 1).all()
    logprobs = caption_logprobs(model, grid, pooled, drawn, torch.arange(5).repeat_interleave(3))
    assert (logprobs[~mask] == 0).all() and (logprobs[mask] < 0).all()
    # Captions that never end are cut after max_length words, the cut step not counted.
    assert (mask.sum(dim=1) <= 6).all() and ((mask.sum(dim=1) == 6) <= (ended[:, -1] == 1)).all()


@pytest.mark.parametrize("kind", KINDS)
def test_rows_b_n_to_b_n_plus_n_are_image_bs(kind):
    model, n = tiny_model(kind), 3
    grid, pooled = features(4)
    drawn, _ = sample_decode(model, grid, pooled, max_length=4, n=n,
                             generator=torch.Generator().manual_seed(2))
    owner = torch.arange(4).repeat_interleave(n)
    with torch.no_grad():
        right = caption_logprobs(model, grid, pooled, drawn, owner)
        wrong = caption_logprobs(model, grid, pooled, drawn, owner.roll(n))
    assert drawn.shape[0] == 4 * n
    torch.testing.assert_close(right, stepwise_logprobs(model, grid, pooled, drawn, n).detach(),
                               rtol=0, atol=1e-5)
    assert (wrong - right).abs().max() > 1e-3
    prefer(model, 7)  # the most likely word everywhere: every row draws it
    certain, _ = sample_decode(model, grid, pooled, max_length=4, n=n)
    assert (certain[:, :4] == 7).all()


def test_bad_arguments():
    model = tiny_model("I")
    with pytest.raises(ValueError, match="n must be"):
        sample_decode(model, *features(2), max_length=3, n=0)
    with pytest.raises(ValueError, match="max_length"):
        sample_decode(model, *features(2), max_length=0, n=2)
