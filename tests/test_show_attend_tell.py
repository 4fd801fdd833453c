"""What Show-Attend-Tell and ImageCaptioning.pytorch train with: the gate on the attended context
(`model.attention_gate`), the doubly stochastic attention regularisation
(`train.attention_regularization`) and label smoothing (`train.label_smoothing`)."""

import dataclasses

import pytest
import torch
from params_overrides import cpu_training, merged
from test_model import _stepwise, _unequal_captions
from test_training import CONFIG, EMBEDDINGS, VOCAB, _split

from imcap.data.vocab import BOS_ID
from imcap.model.checkpoint import load_checkpoint, save_checkpoint
from imcap.model.decoder import CaptionDecoder, DecoderConfig
from imcap.model.loss import summed_word_loss
from imcap.params import ParamError, parse_params
from imcap.training.loop import train_decoder


def _model(attention: str, gate: bool = False) -> CaptionDecoder:
    torch.manual_seed(0)
    config = DecoderConfig(vocab_size=12, embed_dim=8, encoder_channels=16, projection_size=12,
                           hidden_size=10, attention=attention, attention_size=6, dropout=0.0,
                           attention_gate=gate)
    return CaptionDecoder(config).eval()


@pytest.mark.parametrize("attention", ["I", "II"])
def test_the_gate_scales_the_context_by_a_sigmoid_of_the_hidden_state(attention):
    gated, plain = _model(attention, gate=True), _model(attention)
    extra = sum(p.numel() for p in gated.parameters()) - sum(
        p.numel() for p in plain.parameters())
    assert extra == 10 + 1  # one scalar per step: Linear(H, 1)
    with torch.no_grad():
        state = gated.start(torch.randn(3, 5, 16), torch.randn(3, 16))
        hidden = torch.randn(3, 10)
        alpha, context = gated._attend(state.keys, state.grid, hidden)
        beta = torch.sigmoid(hidden @ gated.gate.weight.T + gated.gate.bias)  # [3, 1]
        expected = beta * torch.einsum("br,brp->bp", alpha, state.grid)
    torch.testing.assert_close(context, expected)
    assert not torch.allclose(beta, torch.full_like(beta, beta[0, 0].item()))  # varies with h


@pytest.mark.parametrize("attention", ["I", "II"])
def test_the_gate_trains_as_it_decodes_and_survives_a_checkpoint(attention, tmp_path):
    model = _model(attention, gate=True)
    grid, pooled, captions = _unequal_captions()
    forward = model(grid, pooled, captions)
    torch.testing.assert_close(forward, _stepwise(model, grid, pooled, captions),
                               atol=1e-6, rtol=0)
    forward.square().sum().backward()
    assert model.gate.weight.grad.abs().sum() > 0
    save_checkpoint(tmp_path / "m.pt", model, epoch=1, val_bleu4=0.0)
    loaded = load_checkpoint(tmp_path / "m.pt")
    assert loaded.config.attention_gate
    with torch.no_grad():
        token = torch.tensor([BOS_ID, BOS_ID])
        a, _, _ = loaded.step(token, loaded.start(grid, pooled))
        b, _, _ = model.step(token, model.start(grid, pooled))
    torch.testing.assert_close(a, b)


def hand_coverage(model: CaptionDecoder, grid, pooled, captions) -> torch.Tensor:
    """Each caption's attention summed over its real steps [M, R], decoding it by `step`
    alone (the padded steps of the shorter captions left out)."""
    state = model.start(grid[captions.owner], pooled[captions.owner])
    current = captions.tokens[:, 0]
    total = torch.zeros(len(captions.tokens), grid.size(1))
    for t, rows in enumerate(captions.steps):
        _, state, alpha = model.step(current, state)
        total[:rows] += alpha[:rows]
        current = captions.tokens[:, t + 1]
    return total


@pytest.mark.parametrize("attention", ["I", "II"])
@pytest.mark.parametrize("gate", [False, True])
def test_attention_regularization_adds_the_doubly_stochastic_term(attention, gate):
    model = _model(attention, gate)
    grid, pooled, captions = _unequal_captions()
    with torch.no_grad():
        plain = summed_word_loss(model, grid, pooled, captions)
        regularized = summed_word_loss(model, grid, pooled, captions,
                                       attention_regularization=0.7)
        coverage = hand_coverage(model, grid, pooled, captions)
    assert coverage.sum().item() == pytest.approx(len(captions.targets), abs=1e-4)
    term = 0.7 * ((1 - coverage) ** 2).sum()
    assert regularized.item() == pytest.approx((plain + term).item(), rel=1e-5)
    assert term.item() > 0.1  # a real term, not rounding


def test_label_smoothing_is_torchs_mix_of_the_target_and_the_uniform_word():
    model = _model("I")
    grid, pooled, captions = _unequal_captions()
    with torch.no_grad():
        smoothed = summed_word_loss(model, grid, pooled, captions, label_smoothing=0.2)
        logp = torch.log_softmax(model(grid, pooled, captions), dim=1)
    nll = -logp.gather(1, captions.targets.unsqueeze(1)).squeeze(1)
    expected = (0.8 * nll + 0.2 * -logp.mean(dim=1)).sum()
    assert smoothed.item() == pytest.approx(expected.item(), rel=1e-5)
    assert abs(smoothed.item() - nll.sum().item()) > 1e-2  # float error is ~1e-5 here


@pytest.mark.parametrize(("raw", "message"), [
    ({"attention": "none", "train": {"attention_regularization": 1.0}},
     r"train\.attention_regularization needs decoder lstm with attention I or II \(got "
     r"decoder lstm, attention none\); set it to 0"),
    ({"decoder": "transformer", "train": {"attention_regularization": 1.0}},
     r"train\.attention_regularization needs decoder lstm"),
    ({"attention": "none", "model": {"attention_gate": True}},
     r"model\.attention_gate needs decoder lstm with attention I or II"),
    ({"train": {"label_smoothing": 1.0}}, r"train\.label_smoothing"),
])
def test_options_without_the_attention_they_act_on_are_refused_in_one_line(raw, message):
    with pytest.raises(ParamError, match=message) as err:
        parse_params(merged({"decoder": "lstm", **raw}))  # the options' decoder, unless set
    assert "\n" not in str(err.value)
    parse_params(merged({"decoder": "lstm",
                         "train": {"attention_regularization": 1.0, "label_smoothing": 0.1},
                         "model": {"attention_gate": True}}))


@pytest.mark.statistical
def test_training_with_all_three_still_learns_the_task(tmp_path):
    """The toy task of tests/test_training.py, trained with the gate, λ = 1 and smoothing 0.1:
    it reaches a validation BLEU-4 above 90 as plain training does (a broken gate or term
    would not)."""
    config = dataclasses.replace(CONFIG, attention_gate=True)
    result = train_decoder(config, cpu_training(epochs=8, patience=50, average_last=0,
                                                attention_regularization=1.0,
                                                label_smoothing=0.1),
                           EMBEDDINGS, _split(128, 0), _split(32, 1), VOCAB,
                           tmp_path / "model.pt", seed=3)
    assert result.best_val_bleu4 > 90, f"best validation BLEU-4 {result.best_val_bleu4:.2f} <= 90"
    assert load_checkpoint(tmp_path / "model.pt").config.attention_gate
