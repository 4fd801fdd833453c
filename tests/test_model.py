import pytest
import torch

from imcap.data.vocab import BOS_ID, EOS_ID, PAD_ID
from imcap.model.decode import greedy_decode
from imcap.model.decoder import CaptionDecoder, DecoderConfig


def _model(attention, vocab=12):
    torch.manual_seed(0)
    config = DecoderConfig(vocab_size=vocab, embed_dim=8, encoder_channels=16, projection_size=12,
                           hidden_size=10, attention=attention, attention_size=6, dropout=0.0)
    return CaptionDecoder(config).eval()


@pytest.mark.parametrize("attention", ["none", "I", "II"])
def test_forward_shapes_and_attention_weights(attention):
    model = _model(attention)
    grid, pooled = torch.randn(3, 5, 16), torch.randn(3, 16)
    tokens = torch.randint(4, 12, (3, 7))
    tokens[:, 0] = BOS_ID
    assert model(grid, pooled, tokens).shape == (3, 6, 12)
    state = model.start(grid, pooled)
    logits, _, alpha = model.step(tokens[:, 0], state)
    assert logits.shape == (3, 12)
    if attention == "none":
        assert alpha is None
    else:
        assert alpha.shape == (3, 5)
        assert torch.allclose(alpha.sum(dim=1), torch.ones(3))


@pytest.mark.parametrize("attention", ["I", "II"])
def test_attention_makes_the_output_depend_on_single_regions(attention):
    """Changing one region changes the next-word logits only when the decoder attends."""
    grid, pooled = torch.randn(1, 5, 16), torch.randn(1, 16)
    changed = grid.clone()
    changed[0, 2] = torch.randn(16)  # not a constant shift: LayerNorm would erase that
    start = torch.tensor([BOS_ID])
    for kind, should_change in ((attention, True), ("none", False)):
        model = _model(kind)
        a, _, _ = model.step(start, model.start(grid, pooled))
        b, _, _ = model.step(start, model.start(changed, pooled))
        assert (not torch.allclose(a, b)) == should_change


def test_unknown_attention_is_rejected():
    with pytest.raises(ValueError, match="none, I, II"):
        _model("III")


@pytest.mark.parametrize("attention", ["none", "I", "II"])
def test_greedy_decode_stops_at_eos_and_pads_after(attention):
    model = _model(attention)
    with torch.no_grad():  # make EOS the best word after the first step
        model.out.bias.zero_()
        model.out.weight.zero_()
        model.out.bias[5] = 1.0
    calls = {"n": 0}
    original_step = model.step

    def step(tokens, state):
        logits, state, alpha = original_step(tokens, state)
        calls["n"] += 1
        if calls["n"] >= 2:
            logits = logits.clone()
            logits[:, EOS_ID] = 10.0
        return logits, state, alpha

    model.step = step
    ids, alphas = greedy_decode(model, torch.randn(2, 5, 16), torch.randn(2, 16), max_length=6)
    assert ids.tolist() == [[5, EOS_ID], [5, EOS_ID]]
    assert (alphas is None) == (attention == "none")
    if alphas is not None:
        assert alphas.shape == (2, 2, 5)


def test_greedy_decode_respects_max_length():
    model = _model("I")
    with torch.no_grad():
        model.out.weight.zero_()
        model.out.bias.zero_()
        model.out.bias[6] = 1.0  # never EOS
    ids, _ = greedy_decode(model, torch.randn(2, 5, 16), torch.randn(2, 16), max_length=4)
    assert ids.shape == (2, 5)
    assert (ids == 6).all() and not (ids == PAD_ID).any()
