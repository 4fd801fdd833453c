"""The caption decoder of the seed's v8: a Transformer decoder over the region grid.

Words: the same (pretrained) word vectors as the LSTM, projected to the model width W when their
size differs, plus sinusoidal positions. Regions: each region vector layer-normalised and
projected C -> W (as the LSTM does), plus a 2-D sinusoidal encoding of its (row, column) in the
grid, so that cross-attention can tell left from right. Each layer is pre-norm: causal
self-attention, cross-attention to the regions, a feed-forward block (4·W, GELU), each a
residual branch with dropout; a final LayerNorm feeds the output layer. The pooled vector is not
used: it is the mean of the regions the decoder already attends to.

Training is one causal pass over the whole caption (teacher forcing). Decoding is incremental:
each layer's self-attention keys and values are cached, so a step computes only the new word.
The attention weights `step` returns are the last layer's cross-attention weights averaged over
its heads (what the figures draw)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from imcap.model.captions import SortedCaptions
from imcap.model.decoder import DecoderConfig


def sinusoids(positions: torch.Tensor, width: int) -> torch.Tensor:
    """The sinusoidal encoding [N, width] of `positions` [N] (Vaswani et al.; width even)."""
    rates = torch.exp(torch.arange(0, width, 2, device=positions.device)
                      * (-math.log(10_000.0) / width))
    angles = positions.float().unsqueeze(1) * rates
    return torch.stack([angles.sin(), angles.cos()], dim=2).flatten(1)


def grid_positions(regions: int, width: int, device: torch.device) -> torch.Tensor:
    """[R, width]: half the channels encode each region's row, half its column, in the
    row-major s×s grid the encoder flattened (s = ceil(sqrt(R)))."""
    side = math.isqrt(regions - 1) + 1
    index = torch.arange(regions, device=device)
    return torch.cat([sinusoids(index // side, width // 2), sinusoids(index % side, width // 2)],
                     dim=1)


class CausalSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """`x` [B, T, W] attending causally to itself; with `cache` (the keys and values
        [B, heads, t, W/heads] of the t words before), `x` is the next word (T = 1), which may
        see them all. Returns the output and the keys and values of every word so far."""
        batch, length, width = x.shape
        q, k, v = (self.qkv(x).view(batch, length, 3, self.heads, width // self.heads)
                   .permute(2, 0, 3, 1, 4))
        if cache is not None:
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=cache is None,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(batch, length, width)), (k, v)


class DecoderLayer(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.self_norm = nn.LayerNorm(width)
        self.self_attention = CausalSelfAttention(width, heads, dropout)
        self.cross_norm = nn.LayerNorm(width)
        self.cross_attention = nn.MultiheadAttention(width, heads, dropout=dropout,
                                                     batch_first=True)
        self.feed_forward_norm = nn.LayerNorm(width)
        self.feed_forward = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(),
                                          nn.Dropout(dropout), nn.Linear(4 * width, width))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor,
                cache: tuple[torch.Tensor, torch.Tensor] | None = None, need_weights: bool = False
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], torch.Tensor | None]:
        """The words `x` [B, T, W] after this layer, their self-attention keys and values, and
        (`need_weights`) the cross-attention weights [B, T, R] averaged over the heads."""
        attended, cache = self.self_attention(self.self_norm(x), cache)
        x = x + self.dropout(attended)
        attended, weights = self.cross_attention(self.cross_norm(x), memory, memory,
                                                 need_weights=need_weights)
        x = x + self.dropout(attended)
        return x + self.dropout(self.feed_forward(self.feed_forward_norm(x))), cache, weights


@dataclass
class TransformerState:
    memory: torch.Tensor  # [B, R, W] the projected regions with their positions
    caches: list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values [B, h, t, W/h]
    position: int  # t, the words decoded so far (BOS included)

    def select(self, rows: torch.Tensor) -> TransformerState:
        return TransformerState(self.memory[rows], [(k[rows], v[rows]) for k, v in self.caches],
                                self.position)

    def repeat(self, k: int) -> TransformerState:
        return TransformerState(self.memory.repeat_interleave(k, dim=0),
                                [(keys.repeat_interleave(k, dim=0),
                                  values.repeat_interleave(k, dim=0))
                                 for keys, values in self.caches], self.position)

    def follow(self, rows: torch.Tensor) -> TransformerState:
        """An image's rows share its regions: only the caches follow `rows`."""
        return TransformerState(self.memory, [(k[rows], v[rows]) for k, v in self.caches],
                                self.position)


class TransformerCaptionDecoder(nn.Module):
    def __init__(self, config: DecoderConfig, embeddings: torch.Tensor | None = None,
                 freeze_embeddings: bool = False) -> None:
        super().__init__()
        if config.width % config.heads or config.width % 4:
            raise ValueError(f"width {config.width} must be a multiple of heads "
                             f"({config.heads}) and of 4 (the grid's sinusoids)")
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embed_dim)
        if embeddings is not None:
            self.embed.weight.data.copy_(embeddings)
        self.embed.weight.requires_grad_(not freeze_embeddings)
        self.embed_proj = (nn.Linear(config.embed_dim, config.width)
                           if config.embed_dim != config.width else nn.Identity())
        self.feature_norm = nn.LayerNorm(config.encoder_channels)
        self.feature_proj = nn.Linear(config.encoder_channels, config.width)
        self.layers = nn.ModuleList(DecoderLayer(config.width, config.heads, config.dropout)
                                    for _ in range(config.layers))
        self.dropout = nn.Dropout(config.dropout)
        self.norm = nn.LayerNorm(config.width)
        self.out = nn.Linear(config.width, config.vocab_size)

    @property
    def attention(self) -> nn.Module:
        """The cross-attention whose head-averaged weights `step` returns: the last layer's."""
        return self.layers[-1].cross_attention

    def forward(self, grid: torch.Tensor, pooled: torch.Tensor, captions: SortedCaptions,
                teacher_forcing: float = 1.0) -> torch.Tensor:
        """Logits [N, V] of the words to predict, in the order of `captions.targets`, from one
        causal pass; `grid` holds each image once (`captions.owner` says whose caption is
        whose). The output layer runs on the predicted words only."""
        if teacher_forcing < 1.0:
            raise ValueError("the transformer decoder trains in one causal pass: "
                             "train.teacher_forcing must be 1.0")
        memory = self._memory(grid)[captions.owner]
        x = self._words(captions.tokens[:, :-1], 0)
        for layer in self.layers:
            x, _, _ = layer(x, memory)
        return self.out(self.norm(captions.words_of(x)))

    def compile_steps(self) -> None:
        """`torch.compile` each layer (`train.compile`), for batches of any shape."""
        for layer in self.layers:
            layer.compile(dynamic=True)

    def start(self, grid: torch.Tensor, pooled: torch.Tensor) -> TransformerState:
        """No word yet: the projected regions and empty caches."""
        memory = self._memory(grid)
        empty = memory.new_zeros(len(grid), self.config.heads, 0,
                                 self.config.width // self.config.heads)
        return TransformerState(memory, [(empty, empty)] * len(self.layers), 0)

    def step(self, tokens: torch.Tensor, state: TransformerState
             ) -> tuple[torch.Tensor, TransformerState, torch.Tensor]:
        """One word: logits [B, V], the new state, the last layer's cross-attention weights
        [B, R] averaged over its heads."""
        x = self._words(tokens.unsqueeze(1), state.position)
        caches, weights = [], None
        for i, (layer, cache) in enumerate(zip(self.layers, state.caches, strict=True)):
            x, cache, weights = layer(x, state.memory, cache,
                                      need_weights=i == len(self.layers) - 1)
            caches.append(cache)
        logits = self.out(self.norm(x[:, 0]))
        return logits, TransformerState(state.memory, caches, state.position + 1), weights[:, 0]

    def _memory(self, grid: torch.Tensor) -> torch.Tensor:
        regions = self.feature_proj(self.feature_norm(grid.float()))
        return self.dropout(regions + grid_positions(grid.size(1), self.config.width,
                                                     grid.device))

    def _words(self, tokens: torch.Tensor, first: int) -> torch.Tensor:
        """Token ids [B, T] at positions first .. first + T - 1 as model inputs [B, T, W]."""
        positions = torch.arange(first, first + tokens.size(1), device=tokens.device)
        return self.dropout(self.embed_proj(self.embed(tokens))
                            + sinusoids(positions, self.config.width))
