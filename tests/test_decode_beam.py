"""Batched beam search (imcap.model.beam)."""

import itertools
import math

import pytest
import torch
from test_decode import features, prefer, tiny_model

from imcap.data.vocab import BOS_ID, EOS_ID, PAD_ID
from imcap.model.beam import beam_search
from imcap.model.decode import greedy_decode, mask_specials
from imcap.model.interface import Decoder


def sequence_logprob(model, grid, pooled, ids: list[int], min_length: int = 0) -> float:
    """log P(ids | image) under the model, with the same masking as the decoders."""
    state = model.start(grid, pooled)
    current, total = torch.tensor([BOS_ID]), 0.0
    with torch.no_grad():
        for t, word in enumerate(ids):
            logits, state, _ = model.step(current, state)
            total += mask_specials(torch.log_softmax(logits, 1), t, min_length)[0, word].item()
            current = torch.tensor([word])
    return total


def ending_model(attention: str, seed: int = 0) -> Decoder:
    """A random model whose captions end at varied lengths: word 7 is likely, and EOS follows
    it. (Plain random models hardly ever emit EOS, so every caption would run to the end.)"""
    model = tiny_model(attention, vocab=30, seed=seed)
    with torch.no_grad():
        model.out.weight[7] *= 6
        model.out.bias[7] = 0.4
    step = model.step

    def step_then_end_after_7(tokens, state):
        logits, state, alpha = step(tokens, state)
        logits = logits.clone()
        logits[tokens == 7, EOS_ID] += 20.0
        return logits, state, alpha

    model.step = step_then_end_after_7
    return model


def bigram_model(table: dict[int, dict[int, float]], vocab: int = 12) -> Decoder:
    """A decoder whose next word depends only on the previous one: `table[previous]` gives the
    probabilities of the likely next words; every other word is practically impossible."""
    model = tiny_model("none", vocab=vocab)
    logits = torch.full((vocab, vocab), -30.0)
    for previous, nexts in table.items():
        for word, probability in nexts.items():
            logits[previous, word] = math.log(probability)

    def step(tokens, state):
        return logits[tokens], state, None

    model.step = step
    return model


def lengths_of(tokens: torch.Tensor) -> list[int | None]:
    """Caption lengths with EOS; None for a caption that never ended."""
    return [len(words_of(row)) if EOS_ID in row.tolist() else None for row in tokens]


def words_of(row: torch.Tensor) -> list[int]:
    """Token ids up to and including EOS."""
    ids = row.tolist()
    return ids[: ids.index(EOS_ID) + 1] if EOS_ID in ids else ids


@pytest.mark.parametrize("attention", ["none", "I", "II", "transformer", "updown"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_1_is_exactly_greedy(attention, seed):
    for model in (tiny_model(attention, vocab=40, seed=seed), ending_model(attention, seed)):
        grid, pooled = features(32, seed=seed)
        greedy, greedy_alphas = greedy_decode(model, grid, pooled, max_length=12)
        beam = beam_search(model, grid, pooled, beam_size=1, max_length=12)
        assert torch.equal(beam.tokens, greedy)
        if attention == "none":
            assert beam.alphas is None and greedy_alphas is None
        else:
            assert torch.allclose(beam.alphas, greedy_alphas)
            words = beam.tokens != PAD_ID  # one attention map per word, none after EOS
            assert torch.allclose(beam.alphas.sum(dim=2), words.float())


@pytest.mark.parametrize("attention", ["none", "I", "II", "transformer", "updown"])
def test_batched_equals_one_image_at_a_time(attention):
    """Images leave the batch as their beams finish; that must not change any image's result."""
    model = ending_model(attention)
    grid, pooled = features(12)
    batched = beam_search(model, grid, pooled, beam_size=4, max_length=10)
    assert len(set(lengths_of(batched.tokens))) >= 2  # images finish at different steps
    for i in range(12):
        single = beam_search(model, grid[i : i + 1], pooled[i : i + 1], beam_size=4,
                             max_length=10)
        assert words_of(single.tokens[0]) == words_of(batched.tokens[i])
        assert single.scores[0].item() == pytest.approx(batched.scores[i].item(), abs=1e-4)
        if attention != "none":
            steps = len(words_of(single.tokens[0]))
            assert torch.allclose(single.alphas[0, :steps], batched.alphas[i, :steps],
                                  atol=1e-5)


@pytest.mark.parametrize("length_penalty", [0.0, 0.7, 2.0])
def test_a_beam_wide_enough_to_keep_everything_finds_the_best_caption(length_penalty):
    """Brute force over every caption of a 5-word vocabulary with at most 2 words: the 150
    continuations of the last step fit in 150 beams, so beam search must return the best
    finished caption by log P / length^α (length counted with EOS)."""
    model = tiny_model("I", vocab=8, seed=3)  # words 3..7 besides PAD/BOS/EOS
    grid, pooled = features(2, seed=5)
    max_length = 2
    result = beam_search(model, grid, pooled, beam_size=150, max_length=max_length,
                         length_penalty=length_penalty)
    words = [3, 4, 5, 6, 7]
    captions = [[*body, EOS_ID] for n in range(max_length + 1)
                for body in itertools.product(words, repeat=n)]
    for i in range(2):
        g, p = grid[i : i + 1], pooled[i : i + 1]
        scored = {tuple(c): sequence_logprob(model, g, p, c) / len(c) ** length_penalty
                  for c in captions}
        best = max(scored, key=scored.get)
        assert words_of(result.tokens[i]) == list(best)
        assert result.scores[i].item() == pytest.approx(scored[best], abs=1e-4)


def test_scores_are_the_log_probability_of_the_returned_caption():
    model = tiny_model("II", vocab=25)
    grid, pooled = features(6)
    result = beam_search(model, grid, pooled, beam_size=3, max_length=8, min_length=2)
    for i in range(6):
        ids = words_of(result.tokens[i])
        assert len(ids) >= 3 and EOS_ID not in ids[:2]
        expected = sequence_logprob(model, grid[i : i + 1], pooled[i : i + 1], ids, 2)
        assert result.scores[i].item() == pytest.approx(expected, abs=1e-4)


def test_wider_beams_never_score_worse_than_greedy():
    model = tiny_model("I", vocab=30, seed=4)
    grid, pooled = features(40, seed=4)
    greedy = beam_search(model, grid, pooled, beam_size=1, max_length=10).scores
    wide = beam_search(model, grid, pooled, beam_size=5, max_length=10).scores
    assert (wide >= greedy - 1e-5).all()
    assert (wide > greedy + 1e-4).any()  # and the search does find better captions


@pytest.mark.parametrize("attention", ["none", "I", "II", "transformer", "updown"])
def test_no_beam_reaching_eos_still_returns_the_best_open_caption(attention):
    model = tiny_model(attention)
    with torch.no_grad():
        model.out.bias[EOS_ID] -= 1e4  # EOS practically impossible
    grid, pooled = features(3)
    result = beam_search(model, grid, pooled, beam_size=3, max_length=5)
    assert result.tokens.shape == (3, 5)  # cut at max_length words, none ended
    assert not (result.tokens == EOS_ID).any() and not (result.tokens == PAD_ID).any()
    for i in range(3):
        expected = sequence_logprob(model, grid[i : i + 1], pooled[i : i + 1],
                                    result.tokens[i].tolist())
        assert result.scores[i].item() == pytest.approx(expected, abs=1e-3)
    if attention != "none":
        assert result.alphas.shape == (3, 5, 5)
        assert torch.allclose(result.alphas.sum(dim=2), torch.ones(3, 5))


@pytest.mark.parametrize("beam_size", [1, 3])
@pytest.mark.parametrize("max_length", [1, 3, 7])
def test_captions_never_exceed_max_length_words(beam_size, max_length):
    model = tiny_model("II", vocab=20)
    with torch.no_grad():
        model.out.bias[EOS_ID] -= 1e4  # every caption runs to the limit
    result = beam_search(model, *features(4), beam_size=beam_size, max_length=max_length)
    assert result.tokens.shape == (4, max_length)
    assert result.alphas.shape == (4, max_length, 5)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_a_caption_of_max_length_words_can_still_end(beam_size):
    model = bigram_model({BOS_ID: {4: 1.0}, 4: {5: 1.0}, 5: {EOS_ID: 1.0}})
    result = beam_search(model, *features(2), beam_size=beam_size, max_length=2)
    assert result.tokens.tolist() == [[4, 5, EOS_ID]] * 2


def test_finished_captions_are_preferred_over_captions_cut_at_max_length():
    """`5 5 5 …` never ends but is likely word by word; cut at 6 words it would score
    log P / 6^2 = -0.04, better than the finished `4 EOS` (-0.62 / 2^2 = -0.15)."""
    model = bigram_model({BOS_ID: {4: 0.6, 5: 0.4}, 4: {EOS_ID: 0.9, 5: 0.1},
                          5: {5: 0.9, EOS_ID: 0.1}})
    result = beam_search(model, *features(1), beam_size=2, max_length=6, length_penalty=2.0)
    assert result.tokens.tolist() == [[4, EOS_ID]]
    assert result.scores.item() == pytest.approx(math.log(0.6 * 0.9) / 2**2, abs=1e-4)


@pytest.mark.parametrize(("length_penalty", "expected"), [
    (0.0, [4, EOS_ID]),  # log P: -0.69 beats -1.61
    (1.0, [4, 6, 7, 8, 9, EOS_ID]),  # log P / length: -1.61 / 6 = -0.27 beats -0.69 / 2
])
def test_a_finished_caption_does_not_take_an_open_beams_place(length_penalty, expected):
    """With 2 beams, `4 EOS` and `4 5` are the best two after two words; the long caption
    through `4 6` survives only because finished captions are kept apart from the open beams
    (and ranked with the length penalty as they finish)."""
    model = bigram_model({BOS_ID: {4: 1.0}, 4: {EOS_ID: 0.5, 5: 0.3, 6: 0.2},
                          5: {EOS_ID: 0.9, 10: 0.1}, 6: {7: 1.0}, 7: {8: 1.0}, 8: {9: 1.0},
                          9: {EOS_ID: 1.0}})
    result = beam_search(model, *features(1), beam_size=2, max_length=8,
                         length_penalty=length_penalty)
    assert words_of(result.tokens[0]) == expected


def test_finished_captions_are_padded_and_the_search_stops_early():
    model = tiny_model("I")
    prefer(model, EOS_ID)
    steps = []
    step = model.step
    model.step = lambda tokens, state: steps.append(len(tokens)) or step(tokens, state)
    result = beam_search(model, *features(4), beam_size=3, max_length=10, min_length=1)
    assert result.tokens.shape == (4, 2)
    assert (result.tokens[:, 1] == EOS_ID).all()
    assert steps == [12, 12]  # 4 images × 3 beams, then nothing can beat the finished captions


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"beam_size": 0}, "beam_size must be >= 1"),
    ({"length_penalty": -1.0}, "length_penalty must be >= 0"),
    ({"min_length": 9}, "min_length must be between"),
])
def test_bad_settings_are_rejected(kwargs, message):
    settings = {"beam_size": 2, "max_length": 5} | kwargs
    with pytest.raises(ValueError, match=message):
        beam_search(tiny_model("I"), *features(1), **settings)


def test_beam_1_at_the_shipped_length_penalty_is_not_greedy():
    """With `eval.length_penalty` > 0 (as shipped), beam 1 keeps the greedy caption as a
    candidate when greedy ends it, goes on with the best other word, and answers whichever
    scores best by log P / length^α: never worse than greedy by that score, sometimes another
    caption. Hence `beam1` in metrics/eval.json is not `greedy`, and is not called so."""
    from imcap.params import repo_params

    alpha = repo_params().eval.length_penalty
    assert alpha > 0
    for seed in range(3):
        model = ending_model("I", seed)
        grid, pooled = features(32, seed=seed)
        greedy, _ = greedy_decode(model, grid, pooled, max_length=12)
        beam = beam_search(model, grid, pooled, beam_size=1, max_length=12, length_penalty=alpha)
        for i in range(len(grid)):
            ids = words_of(greedy[i])
            score = sequence_logprob(model, grid[i:i + 1], pooled[i:i + 1], ids) / len(ids)**alpha
            assert beam.scores[i].item() >= score - 1e-4
    # Greedy: 5 EOS, log P = log .6 + log .55, / 2^α; beam 1: 5 6 EOS, log .6 + log .45, / 3^α.
    model = bigram_model({BOS_ID: {5: 0.6, 6: 0.4}, 5: {EOS_ID: 0.55, 6: 0.45}, 6: {EOS_ID: 1.0}})
    grid, pooled = features(1)
    assert words_of(greedy_decode(model, grid, pooled, max_length=5)[0][0]) == [5, EOS_ID]
    beam = beam_search(model, grid, pooled, beam_size=1, max_length=5, length_penalty=alpha)
    assert words_of(beam.tokens[0]) == [5, 6, EOS_ID]
