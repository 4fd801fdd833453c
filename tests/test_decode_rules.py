"""Decoding rules (imcap.model.constraints) and diverse beam search (imcap.model.beam), against
brute force and a plain one-image-at-a-time reference."""

import itertools
from collections import Counter

import pytest
import torch
from test_decode import features, tiny_model
from test_decode_beam import bigram_model, ending_model, sequence_logprob, words_of

from imcap.data.vocab import BOS_ID, EOS_ID, SPECIALS, Vocabulary
from imcap.model.beam import beam_search
from imcap.model.constraints import BAD_ENDINGS, DecodingRules
from imcap.model.decode import greedy_decode, mask_specials


def repeats_a_trigram(ids: list[int]) -> bool:
    trigrams = list(zip(ids, ids[1:], ids[2:], strict=False))
    return len(trigrams) != len(set(trigrams))


def allowed(caption: list[int], rules: DecodingRules) -> bool:
    """Whether `caption` (words, then EOS when it ended) obeys `rules`."""
    words = [w for w in caption if w != EOS_ID]
    if rules.block_trigrams and repeats_a_trigram(words):
        return False
    ended = caption[-1:] == [EOS_ID]
    return not (ended and len(words) and words[-1] in rules.bad_endings)


def test_the_rules_mask_exactly_the_words_they_forbid():
    rules = DecodingRules(block_trigrams=True, bad_endings=(5,))
    history = torch.tensor([[4, 6, 7, 4, 6], [4, 6, 7, 4, 5], [4, 4, 4, 4, 4]])
    masked = rules.mask(torch.zeros(3, 10), history)
    assert masked[0].isinf().nonzero().flatten().tolist() == [7]  # "4 6 7" again
    assert masked[1].isinf().nonzero().flatten().tolist() == [EOS_ID]  # no EOS after 5
    assert masked[2].isinf().nonzero().flatten().tolist() == [4]
    assert not DecodingRules().mask(torch.zeros(3, 10), history).isinf().any()


def test_bad_endings_are_the_listed_words_the_vocabulary_has():
    vocab = Vocabulary((*SPECIALS, "a", "dog", "with", "ball"))
    rules = DecodingRules.from_vocab(vocab, block_trigrams=False, remove_bad_endings=True)
    assert sorted(rules.bad_endings) == [vocab.id("a"), vocab.id("with")]
    assert {"a", "the", "with", "of"} <= set(BAD_ENDINGS)
    off = DecodingRules.from_vocab(vocab, block_trigrams=False, remove_bad_endings=False)
    assert not off.active


@pytest.mark.parametrize("rules", [
    DecodingRules(block_trigrams=True),
    DecodingRules(bad_endings=(3,)),
    DecodingRules(block_trigrams=True, bad_endings=(3, 5)),
])
@pytest.mark.parametrize("length_penalty", [1.0, 2.0])
def test_a_wide_beam_finds_the_best_caption_the_rules_allow(rules, length_penalty):
    """Brute force over every caption of 5 words with at most 5 words. The model loves
    `4 4 4 …` ended by `3 EOS`, and the length penalty makes the longest such caption the
    best: every rule breaks it."""
    model = bigram_model({BOS_ID: {4: 0.9, 5: 0.1}, 4: {4: 0.85, 3: 0.1, EOS_ID: 0.05},
                          5: {3: 0.5, EOS_ID: 0.5}, 3: {EOS_ID: 1.0}}, vocab=8)
    grid, pooled = features(1)
    max_length = 5
    captions = [[*body, EOS_ID] for n in range(max_length + 1)
                for body in itertools.product(range(3, 8), repeat=n)]
    every = {tuple(c): sequence_logprob(model, grid, pooled, c) / len(c) ** length_penalty
             for c in captions}
    scored = {c: score for c, score in every.items() if allowed(list(c), rules)}
    best = max(scored, key=scored.get)
    assert not allowed(list(max(every, key=every.get)), rules)  # the rules change the answer
    result = beam_search(model, grid, pooled, beam_size=5**4 * 5, max_length=max_length,
                         length_penalty=length_penalty, rules=rules)
    assert words_of(result.tokens[0]) == list(best)
    assert result.scores[0].item() == pytest.approx(scored[best], abs=1e-4)


@pytest.mark.parametrize("attention", ["none", "I", "transformer", "updown"])
def test_greedy_with_rules_is_beam_1_with_rules_and_obeys_them(attention):
    model = ending_model(attention)
    grid, pooled = features(32)
    rules = DecodingRules(block_trigrams=True, bad_endings=(7, 8))
    greedy, _ = greedy_decode(model, grid, pooled, max_length=15, rules=rules)
    beam = beam_search(model, grid, pooled, beam_size=1, max_length=15, rules=rules)
    assert torch.equal(greedy, beam.tokens)
    plain, _ = greedy_decode(model, grid, pooled, max_length=15)
    assert not all(allowed(words_of(row), rules) for row in plain)  # rules are needed
    assert all(allowed(words_of(row), rules) for row in greedy)
    wide = beam_search(model, grid, pooled, beam_size=4, max_length=15, rules=rules)
    assert all(allowed(words_of(row), rules) for row in wide.tokens)


def next_logps(model, grid, pooled, words: list[int]) -> torch.Tensor:
    """log P(next word | `words`) [V], masked like the decoders."""
    state = model.start(grid, pooled)
    current = torch.tensor([BOS_ID])
    with torch.no_grad():
        for word in [*words, None]:
            logits, state, _ = model.step(current, state)
            if word is not None:
                current = torch.tensor([word])
    return mask_specials(torch.log_softmax(logits, 1), len(words), 0)[0]


def diverse_reference(model, grid, pooled, beam_size: int, groups: int, diversity: float,
                      max_length: int, length_penalty: float) -> tuple[list[int], float]:
    """Diverse beam search of one image, plainly: each group ranks its beams' continuations by
    log P less `diversity` × how often earlier groups chose the word at this step; a caption
    that ends among a group's m best is finished with its log P / length^α; the answer is the
    best finished caption (or the best open beam of max_length words)."""
    m = beam_size // groups
    beams = [[(0.0, 0.0, [])] for _ in range(groups)]  # (search score, log P, words)
    finished: list[tuple[float, list[int]]] = []
    for _ in range(max_length + 1):
        cut = list(beams)  # the open beams of max_length words, at the last step
        chosen: Counter[int] = Counter()
        for g in range(groups):
            candidates = []
            for search, logp, words in beams[g]:
                lp = next_logps(model, grid, pooled, words)
                for word in range(len(lp)):
                    if lp[word].isfinite():
                        candidates.append((search + lp[word].item() - diversity * chosen[word],
                                           logp + lp[word].item(), [*words, word]))
            best = sorted(candidates, key=lambda c: -c[0])[: 2 * m]
            finished += [(logp / len(words) ** length_penalty, words)
                         for _, logp, words in best[:m] if words[-1] == EOS_ID]
            beams[g] = [c for c in best if c[2][-1] != EOS_ID][:m]
            chosen.update(words[-1] for _, _, words in beams[g])
    if finished:
        score, words = max(finished, key=lambda f: f[0])
        return words, score
    _, logp, words = max((b for group in cut for b in group), key=lambda b: b[1])
    return words, logp / max_length ** length_penalty


@pytest.mark.parametrize(("beam_size", "groups", "diversity"),
                         [(4, 2, 0.5), (4, 4, 2.0), (6, 3, 1.0), (3, 3, 0.0)])
@pytest.mark.parametrize("attention", ["II", "transformer", "updown"])
def test_diverse_beam_search_equals_the_plain_reference(beam_size, groups, diversity,
                                                        attention):
    model = ending_model(attention, seed=1)
    grid, pooled = features(5, seed=2)
    result = beam_search(model, grid, pooled, beam_size, max_length=6, length_penalty=0.5,
                         groups=groups, diversity=diversity)
    for i in range(5):
        words, score = diverse_reference(model, grid[i : i + 1], pooled[i : i + 1], beam_size,
                                         groups, diversity, 6, 0.5)
        assert words_of(result.tokens[i]) == words
        assert result.scores[i].item() == pytest.approx(score, abs=1e-4)


def test_diversity_changes_what_the_groups_explore():
    model = ending_model("I", seed=3)
    grid, pooled = features(40, seed=3)
    kwargs = {"beam_size": 4, "max_length": 10, "length_penalty": 0.5}
    plain = beam_search(model, grid, pooled, groups=2, **kwargs)  # two copies of beam 2
    assert torch.equal(plain.tokens,
                       beam_search(model, grid, pooled, 2, 10, length_penalty=0.5).tokens)
    diverse = beam_search(model, grid, pooled, groups=2, diversity=5.0, **kwargs)
    assert (diverse.scores >= plain.scores - 1e-5).all()  # the best found only gets better
    assert (diverse.scores > plain.scores + 1e-4).any()


def test_groups_must_divide_the_beam():
    with pytest.raises(ValueError, match="groups must divide beam_size"):
        beam_search(tiny_model("I"), *features(2), beam_size=3, max_length=4, groups=2)
