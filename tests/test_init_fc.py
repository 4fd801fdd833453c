"""Seed v2's "+ fc": `model.init_fc` puts one more fully connected layer between the image vector
and the LSTM's initial state, and nothing else changes."""

import torch

from imcap.model.checkpoint import load_checkpoint, save_checkpoint
from imcap.model.decoder import CaptionDecoder, DecoderConfig

CONFIG = DecoderConfig(vocab_size=12, embed_dim=6, encoder_channels=8, projection_size=10,
                       hidden_size=7, attention="none", attention_size=5, dropout=0.0)


def _decoder(init_fc: bool) -> CaptionDecoder:
    torch.manual_seed(0)
    return CaptionDecoder(DecoderConfig(**{**CONFIG.as_dict(), "init_fc": init_fc})).eval()


def test_init_fc_adds_one_linear_layer_before_the_initial_state():
    plain, with_fc = _decoder(False), _decoder(True)
    extra = sum(p.numel() for p in with_fc.parameters()) - sum(
        p.numel() for p in plain.parameters())
    assert extra == 10 * 10 + 10  # Linear(P, P) with bias
    grid, pooled = torch.randn(3, 4, 8), torch.randn(3, 8)
    state = with_fc.start(grid, pooled)
    projected = with_fc.feature_proj(with_fc.feature_norm(pooled))
    hidden = torch.relu(with_fc.init_fc[0](projected))
    torch.testing.assert_close(state.h, torch.tanh(with_fc.init_h(hidden)))
    torch.testing.assert_close(state.c, torch.tanh(with_fc.init_c(hidden)))


def test_init_fc_survives_a_checkpoint(tmp_path):
    model = _decoder(True)
    save_checkpoint(tmp_path / "m.pt", model, epoch=1, val_bleu4=0.0)
    loaded = load_checkpoint(tmp_path / "m.pt")
    assert loaded.config.init_fc
    grid, pooled = torch.randn(2, 4, 8), torch.randn(2, 8)
    torch.testing.assert_close(loaded.start(grid, pooled).h, model.start(grid, pooled).h)
