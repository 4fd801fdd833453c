"""The Up-Down decoder (imcap.model.updown): one step is Anderson et al.'s two LSTMs and
top-down attention; training's forward equals `step`; its state, checkpoint and params."""

import dataclasses

import pytest
import torch
from params_overrides import cpu_training, merged
from test_model import _stepwise, _unequal_captions, hand_attention
from test_training import CONFIG, EMBEDDINGS, VOCAB, _split

from imcap.data.vocab import BOS_ID
from imcap.model.checkpoint import load_checkpoint, save_checkpoint
from imcap.model.decode import greedy_decode
from imcap.model.decoder import DecoderConfig
from imcap.model.registry import build_decoder
from imcap.model.updown import UpDownCaptionDecoder
from imcap.params import ParamError, parse_params
from imcap.training.loop import train_decoder


def _model(attention: str = "I") -> UpDownCaptionDecoder:
    torch.manual_seed(0)
    config = DecoderConfig(vocab_size=12, embed_dim=8, encoder_channels=16, projection_size=12,
                           hidden_size=10, attention=attention, attention_size=6, dropout=0.0,
                           decoder="updown")
    return build_decoder(config).eval()


def lstm_cell(cell: torch.nn.LSTMCell, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """An LSTM cell written out: input, forget, cell and output gates, in torch's order."""
    gates = x @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh
    i, f, g, o = gates.chunk(4, dim=1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


@pytest.mark.parametrize("attention", ["I", "II"])
def test_a_step_is_the_attention_lstm_top_down_attention_and_the_language_lstm(attention):
    """h¹ = LSTM₁([h²₋₁, v̄, W_e y₋₁]); α = softmax(a(v, h¹)); v̂ = Σ α v; h² = LSTM₂([v̂, h¹]);
    logits = W_p h², with v the projected regions and v̄ their mean."""
    model = _model(attention)
    grid, pooled, tokens = torch.randn(2, 5, 16), torch.randn(2, 16), torch.tensor([BOS_ID, 4])
    with torch.no_grad():
        state = model.start(grid, pooled)
        state.lstm = tuple(torch.randn(2, 10) for _ in range(4))  # an earlier step's states
        logits, after, alpha = model.step(tokens, state)
        h1, c1, h2, c2 = state.lstm
        regions = model.feature_proj(model.feature_norm(grid))
        h1, c1 = lstm_cell(model.attention_lstm,
                           torch.cat([h2, regions.mean(dim=1), model.embed(tokens)], dim=1),
                           h1, c1)
        expected = torch.tensor([hand_attention(model, regions[i], h1[i]) for i in range(2)])
        context = (expected.float().unsqueeze(2) * regions).sum(dim=1)
        h2, c2 = lstm_cell(model.language_lstm, torch.cat([context, h1], dim=1), h2, c2)
    torch.testing.assert_close(alpha, expected.float(), atol=1e-6, rtol=0)
    for got, want in zip(after.lstm, (h1, c1, h2, c2), strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(logits, model.out(h2), atol=1e-6, rtol=1e-5)
    assert len({round(a, 4) for a in alpha[0].tolist()}) > 1  # not uniform: a real check


def test_the_image_enters_through_its_regions_not_the_pooled_vector():
    """Both LSTMs start at zero; the encoder's pooled vector is not read (v̄ is the regions'
    mean); a single region changes the next word's logits."""
    model = _model()
    grid, start = torch.randn(1, 5, 16), torch.tensor([BOS_ID])
    changed = grid.clone()
    changed[0, 2] = torch.randn(16)
    with torch.no_grad():
        state = model.start(grid, torch.randn(1, 16))
        assert all((x == 0).all() for x in state.lstm)
        a, _, _ = model.step(start, state)
        b, _, _ = model.step(start, model.start(grid, torch.randn(1, 16)))
        c, _, _ = model.step(start, model.start(changed, torch.randn(1, 16)))
    assert torch.equal(a, b) and not torch.allclose(a, c)


@pytest.mark.parametrize("attention", ["I", "II"])
def test_forward_equals_the_step_by_step_logits_and_gradients(attention):
    """Captions of unequal lengths sharing images, as the LSTM decoder's test runs them."""
    model = _model(attention)
    grid, pooled, captions = _unequal_captions()
    forward = model(grid, pooled, captions, teacher_forcing=1.0)
    stepwise = _stepwise(model, grid, pooled, captions)
    assert torch.allclose(forward, stepwise, atol=1e-6)
    grads = [torch.autograd.grad(logits.square().sum(), list(model.parameters()))
             for logits in (forward, stepwise)]
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_without_teacher_forcing_forward_feeds_its_own_predictions():
    model = _model()
    grid, pooled, captions = _unequal_captions()
    with torch.no_grad():
        free = model(grid, pooled, captions, teacher_forcing=0.0)
        forced = model(grid, pooled, captions, teacher_forcing=1.0)
        stepwise = _stepwise(model, grid, pooled, captions, own_words=True)
    assert torch.allclose(free, stepwise, atol=1e-6)
    assert not torch.allclose(free[4:], forced[4:])  # the true words were not fed


def test_the_state_selects_repeats_and_follows_rows():
    model = _model()
    with torch.no_grad():
        state = model.start(torch.randn(2, 5, 16), torch.randn(2, 16)).repeat(3)
        state.lstm = tuple(torch.randn(6, 10) for _ in range(4))
    assert torch.equal(state.grid[3], state.grid[5]) and torch.equal(state.mean[0], state.mean[2])
    rows = torch.tensor([2, 2, 0, 4, 3, 3])  # each beam's parent, of the same image
    followed = state.follow(rows)
    assert all(torch.equal(a, b[rows]) for a, b in zip(followed.lstm, state.lstm, strict=True))
    assert followed.grid is state.grid and followed.keys is state.keys  # shared, not copied
    picked = state.select(torch.tensor([False, False, False, True, True, True]))
    assert torch.equal(picked.lstm[3], state.lstm[3][3:]) and torch.equal(picked.keys,
                                                                          state.keys[3:])


def test_an_updown_checkpoint_loads_as_updown(tmp_path):
    model = _model("II")
    save_checkpoint(tmp_path / "decoder.pt", model, epoch=2, val_bleu4=1.0)
    loaded = load_checkpoint(tmp_path / "decoder.pt")
    assert isinstance(loaded, UpDownCaptionDecoder) and loaded.config == model.config
    grid, pooled = torch.randn(3, 5, 16), torch.randn(3, 16)
    for before, after in zip(greedy_decode(model, grid, pooled, max_length=6),
                             greedy_decode(loaded, grid, pooled, max_length=6), strict=True):
        assert torch.equal(before, after)


def test_params_build_it_and_check_refuses_it_without_attention_in_one_line():
    params = parse_params(merged({"decoder": "updown", "attention": "II"}))
    config = DecoderConfig.from_params(params.attention, params.model, decoder=params.decoder,
                                       vocab_size=10, embed_dim=50, encoder_channels=512)
    model = build_decoder(config)
    assert isinstance(model, UpDownCaptionDecoder)
    assert model.attention_lstm.hidden_size == model.language_lstm.hidden_size == (
        params.model.hidden_size)
    with pytest.raises(ParamError, match=r"decoder updown attends over the regions: set "
                                         r"attention to I or II \(got none\)") as err:
        parse_params(merged({"decoder": "updown", "attention": "none"}))
    assert "\n" not in str(err.value)
    with pytest.raises(ParamError, match=r"model\.attention_gate needs decoder lstm"):
        parse_params(merged({"decoder": "updown", "model": {"attention_gate": True}}))
    with pytest.raises(ValueError, match="attention must be I or II, not 'none'"):
        build_decoder(dataclasses.replace(config, attention="none"))


@pytest.mark.statistical
def test_it_learns_the_task(tmp_path):
    """tests/test_training.py's toy task (the caption is a function of two regions): Up-Down
    reaches a validation BLEU-4 above 90 as the LSTM does."""
    config = dataclasses.replace(CONFIG, decoder="updown")
    result = train_decoder(config, cpu_training(epochs=8, patience=50, average_last=0),
                           EMBEDDINGS, _split(128, 0), _split(32, 1), VOCAB,
                           tmp_path / "model.pt", seed=3)
    assert result.best_val_bleu4 > 90, f"best validation BLEU-4 {result.best_val_bleu4:.2f} <= 90"


def test_compiled_steps_train_like_eager_steps_on_batches_of_any_shape():
    """`train.compile` compiles the time loop's step once (dynamic shapes)."""
    eager, compiled = _model().train(), _model().train()
    compiled.compile_steps()
    for seed, count in enumerate((4, 3)):
        torch.manual_seed(seed)
        grid, pooled, batch = _unequal_captions()
        batch = type(batch).build(batch.tokens[:count], batch.owner[:count])
        outputs = [model(grid, pooled, batch) for model in (eager, compiled)]
        assert torch.allclose(*outputs, atol=1e-5)
        grads = [torch.autograd.grad(out.square().sum(), model.language_lstm.weight_hh)[0]
                 for out, model in zip(outputs, (eager, compiled), strict=True)]
        assert torch.allclose(*grads, atol=1e-5)
