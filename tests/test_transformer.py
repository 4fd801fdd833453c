"""The Transformer decoder (imcap.model.transformer), its registry entry and its checkpoint."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from params_overrides import merged
from test_decode import features, tiny_model

from imcap.data.vocab import BOS_ID, PAD_ID
from imcap.model.beam import beam_search
from imcap.model.checkpoint import load_checkpoint, save_checkpoint
from imcap.model.decode import greedy_decode
from imcap.model.decoder import CaptionDecoder, DecoderConfig
from imcap.model.params import DECODERS
from imcap.model.registry import BUILDERS, build_decoder
from imcap.model.sorted_captions import SortedCaptions
from imcap.model.transformer import TransformerCaptionDecoder
from imcap.params import ParamError, parse_params


def captions(batch: int, length: int, vocab: int = 14, seed: int = 3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(4, vocab, (batch, length), generator=gen)
    tokens[:, 0] = BOS_ID
    return tokens


def full_pass(model: TransformerCaptionDecoder, grid: torch.Tensor, pooled: torch.Tensor,
              tokens: torch.Tensor) -> torch.Tensor:
    """forward's logits as [B, T-1, V], for captions without PAD (all of one length, so the
    stable sort keeps their order and the step-major words reshape)."""
    logits = model(grid, pooled, SortedCaptions.build(tokens))
    return logits.reshape(tokens.size(1) - 1, len(tokens), -1).transpose(0, 1)


def test_a_later_word_never_changes_an_earlier_steps_output():
    model = tiny_model("transformer")
    grid, pooled = features(3)
    tokens = captions(3, 8)
    changed = tokens.clone()
    changed[:, 5] = (changed[:, 5] + 1 - 4) % 10 + 4  # another word at position 5
    before, after = full_pass(model, grid, pooled, tokens), full_pass(model, grid, pooled, changed)
    # Logits at step t predict word t + 1 from words 0..t: steps 0..4 never see word 5.
    assert torch.allclose(before[:, :5], after[:, :5], atol=1e-6)
    assert not torch.allclose(before[:, 5:], after[:, 5:], atol=1e-3)


def test_incremental_decoding_equals_the_full_forward_pass():
    model = tiny_model("transformer")
    grid, pooled = features(4)
    tokens = captions(4, 9)
    full = full_pass(model, grid, pooled, tokens)
    state, steps = model.start(grid, pooled), []
    for t in range(tokens.size(1) - 1):
        logits, state, alpha = model.step(tokens[:, t], state)
        steps.append(logits)
        assert [k.size(2) for k, _ in state.caches] == [t + 1] * 2  # one cached word per step
        assert alpha.shape == (4, 5) and torch.allclose(alpha.sum(dim=1), torch.ones(4))
    assert torch.allclose(torch.stack(steps, dim=1), full, atol=1e-5)


def test_forward_on_captions_of_unequal_lengths_sharing_images():
    """forward (each image's regions projected once, logits only for the words to predict)
    equals decoding each caption step by step over the padded batch."""
    model = tiny_model("transformer")
    grid, pooled = features(2)
    tokens = captions(3, 7)
    tokens[0, 3:], tokens[2, 5:] = PAD_ID, PAD_ID
    batch = SortedCaptions.build(tokens, owner=torch.tensor([1, 0, 1]))
    state, steps = model.start(grid[batch.owner], pooled[batch.owner]), []
    for t in range(len(batch.steps)):
        logits, state, _ = model.step(batch.tokens[:, t], state)
        steps.append(logits)
    assert torch.allclose(model(grid, pooled, batch), batch.words_of(torch.stack(steps, dim=1)),
                          atol=1e-5)


def test_where_a_region_is_matters():
    """Regions carry their grid position: the same regions in another order give other logits."""
    model = tiny_model("transformer")
    grid, pooled = torch.randn(1, 4, 16), torch.randn(1, 16)
    start = torch.tensor([BOS_ID])
    a, _, _ = model.step(start, model.start(grid, pooled))
    b, _, _ = model.step(start, model.start(grid[:, [3, 2, 1, 0]], pooled))
    assert not torch.allclose(a, b, atol=1e-4)


def test_the_state_selects_repeats_and_follows_rows():
    model = tiny_model("transformer")
    grid, pooled = features(2)
    state = model.start(grid, pooled)
    _, state, _ = model.step(torch.tensor([5, 6]), state)
    repeated = state.repeat(3)
    assert repeated.beams == 3 and repeated.caches[0][0].shape[0] == 6
    assert repeated.regions is state.regions  # the regions are not copied per beam
    assert torch.equal(repeated.caches[0][0][3], state.caches[0][0][1])
    followed = repeated.follow(torch.tensor([1, 1, 0, 5, 3, 3]))
    assert followed.regions is repeated.regions  # an image's beams share its regions
    assert torch.equal(followed.caches[0][0][3], state.caches[0][0][1])
    selected = state.select(torch.tensor([1]))
    assert torch.equal(selected.caches[1][1][0], state.caches[1][1][1])
    assert torch.equal(selected.regions[0][0][0], state.regions[0][0][1])
    assert selected.position == 1
    kept = repeated.select(torch.tensor([False] * 3 + [True] * 3))  # beam search's mask
    assert kept.beams == 3 and torch.equal(kept.regions[1][1][0], state.regions[1][1][1])
    assert torch.equal(kept.caches[0][0], repeated.caches[0][0][3:])


@pytest.mark.parametrize("rows", [torch.tensor([3, 4]), torch.tensor([0, 2, 1]),
                                  torch.tensor([True, True, False, False, False, False])])
def test_with_several_rows_per_image_select_takes_whole_images(rows):
    model = tiny_model("transformer")
    state = model.start(*features(2)).repeat(3)
    with pytest.raises(ValueError, match="whole images"):
        state.select(rows)


def test_cached_steps_of_beams_equal_the_full_forward_pass():
    """Three beams per image reordered within their image (`follow`) and an image dropped
    (`select`) midway: every row's logits are the full forward pass's over its caption."""
    model = tiny_model("transformer")
    grid, pooled = features(3)
    tokens = captions(9, 8)
    full = full_pass(model, grid.repeat_interleave(3, dim=0),
                     pooled.repeat_interleave(3, dim=0), tokens)
    state, rows = model.start(grid, pooled).repeat(3), torch.arange(9)
    for t in range(tokens.size(1) - 1):
        if t == 3:
            parents = torch.tensor([2, 2, 0, 4, 3, 5, 7, 6, 6])  # each within its image
            state, rows = state.follow(parents), rows[parents]
        if t == 5:
            kept = torch.tensor([True] * 3 + [False] * 3 + [True] * 3)
            state, rows = state.select(kept), rows[kept]
        logits, state, alpha = model.step(tokens[rows, t], state)
        assert torch.allclose(logits, full[rows, t], atol=1e-5)
        assert alpha.shape == (len(rows), 5)
        assert torch.allclose(alpha.sum(dim=1), torch.ones(len(rows)))


@dataclass
class Words:
    grid: torch.Tensor
    pooled: torch.Tensor
    words: torch.Tensor  # [B, t] every word so far

    def select(self, rows: torch.Tensor) -> Words:
        return Words(self.grid[rows], self.pooled[rows], self.words[rows])

    def repeat(self, k: int) -> Words:
        return Words(*(x.repeat_interleave(k, dim=0) for x in (self.grid, self.pooled,
                                                                 self.words)))

    follow = select


class Uncached:
    """The transformer decoding without any cache: every step runs training's causal pass
    over all the words so far, projecting the regions again."""

    attention = None

    def __init__(self, model: TransformerCaptionDecoder) -> None:
        self.model, self.config = model, model.config

    def start(self, grid: torch.Tensor, pooled: torch.Tensor) -> Words:
        return Words(grid, pooled, torch.empty(len(grid), 0, dtype=torch.long))

    def step(self, tokens: torch.Tensor, state: Words) -> tuple[torch.Tensor, Words, None]:
        words = torch.cat([state.words, tokens.unsqueeze(1)], dim=1)
        memory, x = self.model._memory(state.grid), self.model._words(words, 0)
        for layer in self.model.layers:
            x = layer(x, memory)
        return self.model.out(self.model.norm(x[:, -1])), Words(state.grid, state.pooled,
                                                                words), None


@pytest.mark.parametrize("seed", [0, 1, 2])  # no caption ends; all end; some end
def test_greedy_and_beam_captions_equal_those_of_uncached_decoding(seed):
    model = tiny_model("transformer", seed=seed)
    grid, pooled = features(6, seed=seed + 10)
    greedy, _ = greedy_decode(model, grid, pooled, max_length=8)
    assert torch.equal(greedy, greedy_decode(Uncached(model), grid, pooled, max_length=8)[0])
    cached = beam_search(model, grid, pooled, 3, 8, length_penalty=0.5)
    uncached = beam_search(Uncached(model), grid, pooled, 3, 8, length_penalty=0.5)
    assert torch.equal(cached.tokens, uncached.tokens)
    assert torch.allclose(cached.scores, uncached.scores, atol=1e-5)


def test_it_learns_which_region_holds_the_object():
    """A one-word task only cross-attention with region positions can solve: the caption names
    the region (0..3 of a 2×2 grid) that holds the object."""
    torch.manual_seed(0)
    model = tiny_model("transformer")
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    thing = torch.randn(16)  # not a constant shift: LayerNorm would erase that

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        where = torch.randint(0, 4, (n,))
        grid = torch.randn(n, 4, 16) * 0.1
        grid[torch.arange(n), where] += thing
        tokens = torch.stack([torch.full((n,), BOS_ID), where + 4], dim=1)
        return grid, tokens

    for _ in range(150):
        grid, tokens = batch(32)
        loss = torch.nn.functional.cross_entropy(full_pass(model, grid, grid.mean(1), tokens)[:, 0],
                                                 tokens[:, 1])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    grid, tokens = batch(64)
    ids, _ = greedy_decode(model.eval(), grid, grid.mean(1), max_length=1)
    assert (ids[:, 0] == tokens[:, 1]).float().mean() > 0.9


def test_teacher_forcing_below_1_is_refused():
    model = tiny_model("transformer")
    with pytest.raises(ValueError, match=r"train\.teacher_forcing must be 1\.0"):
        model(*features(1), SortedCaptions.build(captions(1, 4)), teacher_forcing=0.9)


def test_a_transformer_checkpoint_loads_as_a_transformer(tmp_path):
    model = tiny_model("transformer")
    save_checkpoint(tmp_path / "decoder.pt", model, epoch=3, val_bleu4=1.0)
    loaded = load_checkpoint(tmp_path / "decoder.pt")
    assert isinstance(loaded, TransformerCaptionDecoder) and loaded.config == model.config
    grid, pooled = features(3)
    for before, after in zip(greedy_decode(model, grid, pooled, max_length=6),
                             greedy_decode(loaded, grid, pooled, max_length=6), strict=True):
        assert torch.equal(before, after)


def test_a_checkpoint_from_before_v8_loads_as_an_lstm(tmp_path):
    model = tiny_model("II")
    save_checkpoint(tmp_path / "decoder.pt", model, epoch=1, val_bleu4=1.0)
    saved = torch.load(tmp_path / "decoder.pt", weights_only=True)
    for key in ("decoder", "layers", "heads", "width"):
        del saved["config"][key]
    torch.save(saved, tmp_path / "decoder.pt")
    assert isinstance(load_checkpoint(tmp_path / "decoder.pt"), CaptionDecoder)


def test_every_decoder_choice_has_a_builder():
    assert tuple(BUILDERS) == DECODERS
    config = tiny_model("transformer").config
    with pytest.raises(ValueError, match="unknown decoder 'gru'; valid: lstm, transformer, updown"):
        build_decoder(DecoderConfig(**{**config.as_dict(), "decoder": "gru"}))


def test_embeddings_are_the_pretrained_vectors_projected_to_the_width():
    config = tiny_model("transformer").config
    vectors = torch.randn(config.vocab_size, config.embed_dim)
    model = build_decoder(config, vectors, freeze_embeddings=True)
    assert torch.equal(model.embed.weight, vectors) and not model.embed.weight.requires_grad
    assert model.embed_proj.in_features == 8 and model.embed_proj.out_features == 16


def test_params_name_the_transformer_and_check_its_heads():
    params = parse_params(merged({"decoder": "transformer"}))
    config = DecoderConfig.from_params(params.attention, params.model, decoder=params.decoder,
                                       vocab_size=10, embed_dim=50, encoder_channels=512)
    assert (config.decoder, config.layers, config.heads, config.width) == (
        "transformer", params.model.transformer_layers, params.model.transformer_heads,
        params.model.transformer_width)
    with pytest.raises(ParamError, match="multiple of transformer_heads"):
        parse_params(merged({"model": {"transformer_width": 250, "transformer_heads": 4}}))
    with pytest.raises(ParamError, match=r"decoder transformer attends over the regions "
                                         r"\(cross-attention\) whatever attention says: for no "
                                         r"attention set decoder lstm") as err:
        parse_params(merged({"decoder": "transformer", "attention": "none"}))
    assert "\n" not in str(err.value)
    parse_params(merged({"decoder": "lstm", "attention": "none"}))
