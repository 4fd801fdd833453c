"""Greedy decoding and sampling (imcap.model.decode)."""

import pytest
import torch

from imcap.data.vocab import BOS_ID, EOS_ID, PAD_ID
from imcap.model.decode import greedy_decode, mask_specials, sample_decode
from imcap.model.decoder import DecoderConfig
from imcap.model.interface import Decoder
from imcap.model.registry import build_decoder


def tiny_model(kind: str, vocab: int = 14, seed: int = 0) -> Decoder:
    """A random decoder: the LSTM with attention `kind` (none | I | II), the transformer, or
    Up-Down with attention I."""
    torch.manual_seed(seed)
    decoder, attention = (kind, "I") if kind in ("transformer", "updown") else ("lstm", kind)
    config = DecoderConfig(vocab_size=vocab, embed_dim=8, encoder_channels=16, projection_size=12,
                           hidden_size=10, attention=attention, attention_size=6, dropout=0.0,
                           decoder=decoder, layers=2, heads=2, width=16)
    model = build_decoder(config).eval()
    if decoder == "updown":  # regions as strong as the LSTM's image vector: captions vary
        with torch.no_grad():  # by image (its random LSTMs start at zero, not from the image)
            model.feature_proj.weight *= 3
    return model


def features(batch: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 5, 16, generator=gen), torch.randn(batch, 16, generator=gen)


def prefer(model: Decoder, token: int, strength: float = 50.0) -> None:
    """Make `token` the most likely word at every step."""
    with torch.no_grad():
        model.out.bias[token] += strength


def test_mask_specials_bans_pad_bos_always_and_eos_before_min_length():
    scores = torch.zeros(2, 6)
    early = mask_specials(scores, step=1, min_length=2)
    late = mask_specials(scores, step=2, min_length=2)
    for banned in (PAD_ID, BOS_ID, EOS_ID):
        assert torch.isinf(early[:, banned]).all()
    assert torch.isinf(late[:, [PAD_ID, BOS_ID]]).all() and (late[:, EOS_ID] == 0).all()
    assert (scores == 0).all()  # the input is left alone


def test_greedy_never_emits_pad_or_bos_even_when_the_model_prefers_them():
    model = tiny_model("I")
    prefer(model, PAD_ID)
    prefer(model, BOS_ID, 40.0)
    ids, _ = greedy_decode(model, *features(3), max_length=5)
    assert not ((ids == PAD_ID) | (ids == BOS_ID)).any()


@pytest.mark.parametrize("attention", ["none", "I", "II", "transformer", "updown"])
def test_greedy_min_length_delays_eos(attention):
    model = tiny_model(attention)
    prefer(model, EOS_ID)
    ids, _ = greedy_decode(model, *features(2), max_length=6)
    assert ids[:, 0].tolist() == [EOS_ID, EOS_ID]
    ids, alphas = greedy_decode(model, *features(2), max_length=6, min_length=3)
    assert ids.shape == (2, 4) and (ids[:, 3] == EOS_ID).all()
    assert not (ids[:, :3] == EOS_ID).any()
    assert (alphas is None) == (attention == "none")


def test_bad_lengths_are_rejected():
    model = tiny_model("I")
    with pytest.raises(ValueError, match="min_length must be between 0 and max_length"):
        greedy_decode(model, *features(1), max_length=3, min_length=4)
    with pytest.raises(ValueError, match="max_length must be >= 1"):
        greedy_decode(model, *features(1), max_length=0)


@pytest.mark.parametrize("attention", ["none", "I", "II", "transformer", "updown"])
def test_sampling_with_top_k_1_is_greedy(attention):
    model = tiny_model(attention)
    grid, pooled = features(6)
    greedy, greedy_alphas = greedy_decode(model, grid, pooled, max_length=8)
    sampled, sampled_alphas = sample_decode(model, grid, pooled, max_length=8, top_k=1,
                                            temperature=3.0)
    assert torch.equal(greedy, sampled)
    if attention != "none":
        assert torch.allclose(greedy_alphas, sampled_alphas)


def test_sampling_is_repeatable_with_a_generator_and_varies_without_one():
    model = tiny_model("II")
    grid, pooled = features(20)

    def draw(seed: int) -> torch.Tensor:
        return sample_decode(model, grid, pooled, max_length=8, temperature=2.0,
                             generator=torch.Generator().manual_seed(seed))[0]

    assert torch.equal(draw(3), draw(3))
    assert not torch.equal(draw(3), draw(4))


def test_sampling_only_draws_from_the_top_k_words():
    """Replay the sampled captions step by step: every word is among the k most likely."""
    model = tiny_model("I", vocab=30)
    grid, pooled = features(16)
    ids, _ = sample_decode(model, grid, pooled, max_length=6, top_k=3, temperature=5.0,
                           generator=torch.Generator().manual_seed(0))
    state = model.start(grid, pooled)
    current = torch.full((16,), BOS_ID)
    with torch.no_grad():
        for t in range(ids.size(1)):
            logits, state, _ = model.step(current, state)
            top3 = mask_specials(logits, t, 0).topk(3, dim=1).indices
            open_rows = ids[:, t] != PAD_ID
            assert (top3[open_rows] == ids[open_rows, t : t + 1]).any(dim=1).all()
            current = ids[:, t]
    assert len(set(ids[:, 0].tolist())) > 1  # a high temperature really samples


def test_low_temperature_sampling_matches_greedy():
    model = tiny_model("I")
    grid, pooled = features(8)
    cold, _ = sample_decode(model, grid, pooled, max_length=8, temperature=1e-4,
                            generator=torch.Generator().manual_seed(0))
    assert torch.equal(cold, greedy_decode(model, grid, pooled, max_length=8)[0])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"temperature": 0.0}, "temperature must be > 0"),
    ({"top_k": -1}, "top_k must be >= 0"),
])
def test_bad_sampling_settings_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sample_decode(tiny_model("I"), *features(1), max_length=3, **kwargs)


@pytest.mark.parametrize("max_length", [1, 4])
def test_captions_never_exceed_max_length_words(max_length):
    model = tiny_model("I")
    with torch.no_grad():
        model.out.bias[EOS_ID] -= 1e4  # every caption runs to the limit
    grid, pooled = features(3)
    greedy, alphas = greedy_decode(model, grid, pooled, max_length=max_length)
    sampled, _ = sample_decode(model, grid, pooled, max_length=max_length,
                               generator=torch.Generator().manual_seed(0))
    assert greedy.shape == sampled.shape == (3, max_length)
    assert alphas.shape == (3, max_length, 5)
    assert not (greedy == PAD_ID).any()


def test_a_caption_of_max_length_words_ends_when_eos_is_the_next_choice():
    model = tiny_model("I")
    prefer(model, 7)
    step = model.step
    calls = []

    def eos_third(tokens, state):  # word 7, word 7, then EOS for image 0 only
        logits, state, alpha = step(tokens, state)
        calls.append(1)
        if len(calls) == 3:
            logits = logits.clone()
            logits[0, EOS_ID] = 1e3
        return logits, state, alpha

    model.step = eos_third
    ids, alphas = greedy_decode(model, *features(2), max_length=2)
    assert ids.tolist() == [[7, 7, EOS_ID], [7, 7, PAD_ID]]
    assert alphas[1, 2].sum() == 0 and alphas[0, 2].sum() == pytest.approx(1.0)
