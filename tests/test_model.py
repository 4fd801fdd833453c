"""The caption decoder (imcap.model.decoder) and its loss (imcap.model.loss)."""

import math

import pytest
import torch

from imcap.data.vocab import BOS_ID, EOS_ID, PAD_ID
from imcap.features.splits import CaptionedSplit
from imcap.model.decode import greedy_decode
from imcap.model.decoder import CaptionDecoder, DecoderConfig
from imcap.model.loss import caption_loss
from imcap.model.sorted_captions import SortedCaptions


def _model(attention, vocab=12):
    torch.manual_seed(0)
    config = DecoderConfig(vocab_size=vocab, embed_dim=8, encoder_channels=16, projection_size=12,
                           hidden_size=10, attention=attention, attention_size=6, dropout=0.0)
    return CaptionDecoder(config).eval()


def _batch(length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features of 3 images and a caption of `length` tokens each (BOS, then random words)."""
    tokens = torch.randint(4, 12, (3, length))
    tokens[:, 0] = BOS_ID
    return torch.randn(3, 5, 16), torch.randn(3, 16), tokens


@pytest.mark.parametrize("attention", ["none", "I", "II"])
def test_forward_shapes_and_attention_weights(attention):
    model = _model(attention)
    grid, pooled, tokens = _batch(7)
    assert model(grid, pooled, SortedCaptions.build(tokens)).shape == (3 * 6, 12)
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


def hand_attention(model: CaptionDecoder, grid: torch.Tensor, hidden: torch.Tensor
                   ) -> list[float]:
    """The attention weights of one image, region by region in plain Python (float64):
    I: v · tanh(W f_r + U h) (+ biases); II: (W f_r) · h / sqrt(H)."""
    attention = model.attention
    h = hidden.double().tolist()

    def linear(layer: torch.nn.Linear, x: list[float]) -> list[float]:
        weight, bias = layer.weight.double().tolist(), layer.bias.double().tolist()
        return [sum(w * v for w, v in zip(row, x, strict=True)) + b
                for row, b in zip(weight, bias, strict=True)]

    scores = []
    for region in grid.double().tolist():
        key = linear(attention.feature_proj, region)
        if model.config.attention == "I":
            query = linear(attention.hidden_proj, h)
            energy = [math.tanh(k + q) for k, q in zip(key, query, strict=True)]
            scores.append(linear(attention.score, energy)[0])
        else:
            scores.append(sum(k * v for k, v in zip(key, h, strict=True))
                          / math.sqrt(len(h)))
    top = max(scores)
    exps = [math.exp(x - top) for x in scores]
    return [x / sum(exps) for x in exps]


@pytest.mark.parametrize("attention", ["I", "II"])
def test_attention_weights_and_context_match_a_hand_computation(attention):
    model = _model(attention)
    with torch.no_grad():  # a non-zero hidden state, so that the query matters
        state = model.start(torch.randn(2, 5, 16), torch.randn(2, 16))
        state.h = torch.randn(2, 10)
        _, _, alpha = model.step(torch.tensor([BOS_ID, 4]), state)
    for i in range(2):
        expected = hand_attention(model, state.grid[i], state.h[i])
        assert alpha[i].tolist() == pytest.approx(expected, abs=1e-6)
    assert len({round(a, 4) for a in alpha[0].tolist()}) > 1  # not uniform: a real check


def _unequal_captions() -> tuple[torch.Tensor, torch.Tensor, SortedCaptions]:
    """Features of 2 images and 4 captions of 5, 2, 4 and 2 words (+ EOS, then PAD), two per
    image, in no particular order of length."""
    tokens = torch.full((4, 8), PAD_ID)
    for row, words in enumerate([5, 2, 4, 2]):
        tokens[row, 0] = BOS_ID
        tokens[row, 1:words + 1] = torch.randint(4, 12, (words,))
        tokens[row, words + 1] = EOS_ID
    owner = torch.tensor([1, 0, 0, 1])
    return torch.randn(2, 5, 16), torch.randn(2, 16), SortedCaptions.build(tokens, owner)


def _stepwise(model: CaptionDecoder, grid: torch.Tensor, pooled: torch.Tensor,
              captions: SortedCaptions, own_words: bool = False) -> torch.Tensor:
    """The logits of the words to predict, decoding every caption step by step with `step`
    over the whole padded batch (feeding its own argmax when `own_words`)."""
    state = model.start(grid[captions.owner], pooled[captions.owner])
    current, steps = captions.tokens[:, 0], []
    for t in range(len(captions.steps)):
        logits, state, _ = model.step(current, state)
        steps.append(logits)
        current = logits.argmax(dim=1) if own_words else captions.tokens[:, t + 1]
    return captions.words_of(torch.stack(steps, dim=1))


def test_sorted_captions_put_the_longest_first_and_targets_step_major():
    _, _, captions = _unequal_captions()
    assert captions.order.tolist() == [0, 2, 1, 3]
    assert captions.owner.tolist() == [1, 0, 0, 1]
    assert captions.steps == (4, 4, 4, 2, 2, 1)  # words + EOS: 6, 5, 3, 3
    words = captions.tokens[:, 1:]
    assert captions.targets[:4].tolist() == words[:, 0].tolist()
    assert captions.targets[-1].item() == EOS_ID
    assert len(captions.targets) == (words != PAD_ID).sum()


@pytest.mark.parametrize("attention", ["none", "I", "II"])
def test_forward_equals_the_step_by_step_logits_and_gradients(attention):
    """Captions of unequal lengths sharing images: forward (each image projected once, the
    finished captions dropped step by step) gives `step`'s logits and the same gradients."""
    model = _model(attention)
    grid, pooled, captions = _unequal_captions()
    forward = model(grid, pooled, captions, teacher_forcing=1.0)
    stepwise = _stepwise(model, grid, pooled, captions)
    # forward runs the output layer once over all steps: the same logits, rounded differently
    assert torch.allclose(forward, stepwise, atol=1e-6)
    grads = [torch.autograd.grad(logits.square().sum(), list(model.parameters()),
                                 allow_unused=True)
             for logits in (forward, stepwise)]
    for a, b in zip(*grads, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.allclose(a, b, atol=1e-5)


def test_without_teacher_forcing_forward_feeds_its_own_predictions():
    model = _model("I")
    grid, pooled, captions = _unequal_captions()
    with torch.no_grad():
        free = model(grid, pooled, captions, teacher_forcing=0.0)
        forced = model(grid, pooled, captions, teacher_forcing=1.0)
        stepwise = _stepwise(model, grid, pooled, captions, own_words=True)
    assert torch.allclose(free, stepwise, atol=1e-6)
    assert not torch.allclose(free[4:], forced[4:])  # the true words were not fed


def test_padding_is_ignored_by_the_loss():
    """Extra PAD columns, and a short caption padded inside the batch, change nothing: the
    loss is the mean over real target words only."""
    model = _model("I")
    grid, pooled = torch.randn(2, 5, 16), torch.randn(2, 16)
    captions = torch.tensor([[BOS_ID, 4, 5, 6, EOS_ID], [BOS_ID, 7, EOS_ID, PAD_ID, PAD_ID]])
    padded = torch.cat([captions, torch.full((2, 3), PAD_ID)], dim=1)

    def loss(tokens: torch.Tensor) -> float:
        data = CaptionedSplit(grid=grid, pooled=pooled, captions=tokens,
                              image_row=torch.tensor([0, 1]), references=[[], []])
        with torch.no_grad():
            return caption_loss(model, data, torch.tensor([0, 1]), torch.device("cpu")).item()

    with torch.no_grad():
        state, logp = model.start(grid, pooled), []
        for t in range(4):
            logits, state, _ = model.step(captions[:, t], state)
            logp.append(torch.log_softmax(logits, dim=1))
        logp = torch.stack(logp, dim=1)
    targets = [(0, 0, 4), (0, 1, 5), (0, 2, 6), (0, 3, EOS_ID), (1, 0, 7), (1, 1, EOS_ID)]
    expected = -sum(logp[i, t, w].item() for i, t, w in targets) / len(targets)
    assert loss(captions) == pytest.approx(expected, abs=1e-6)
    assert loss(padded) == pytest.approx(expected, abs=1e-6)


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
    assert ids.shape == (2, 4)  # max_length words, cut there without EOS
    assert (ids == 6).all() and not (ids == PAD_ID).any()


def test_compiled_steps_train_like_eager_steps_on_batches_of_any_shape():
    """`train.compile` compiles the time loop's step once (dynamic shapes): captions of other
    lengths and counts reuse it and give eager's logits and gradients."""
    eager, compiled = _model("I").train(), _model("I").train()
    compiled.compile_steps()
    for seed, captions in enumerate((4, 3)):
        torch.manual_seed(seed)
        grid, pooled, batch = _unequal_captions()
        batch = SortedCaptions.build(batch.tokens[:captions], batch.owner[:captions])
        outputs = [model(grid, pooled, batch) for model in (eager, compiled)]
        assert torch.allclose(*outputs, atol=1e-5)
        grads = [torch.autograd.grad(out.square().sum(), model.cell.weight_hh)[0]
                 for out, model in zip(outputs, (eager, compiled), strict=True)]
        assert torch.allclose(*grads, atol=1e-5)
