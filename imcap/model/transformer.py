"""The caption decoder of the seed's v8: a Transformer decoder over the region grid.

Words: the same (pretrained) word vectors as the LSTM, projected to the model width W when their
size differs, plus sinusoidal positions. Regions: each region vector layer-normalised and
projected C -> W (as the LSTM does), plus a 2-D sinusoidal encoding of its (row, column) in the
grid, so that cross-attention can tell left from right. Each layer is pre-norm: causal
self-attention, cross-attention to the regions, a feed-forward block (4·W, GELU), each a
residual branch with dropout; a final LayerNorm feeds the output layer. The pooled vector is not
used: it is the mean of the regions the decoder already attends to.

Training is one causal pass over the whole caption (teacher forcing). Decoding is incremental:
`start` projects each image's regions into every layer's cross-attention keys and values once,
each layer's self-attention keys and values are cached, so a step computes only the new word.
An image's rows (its beams, in beam search) are consecutive; a step attends from all of them to
the image's one copy of the region keys and values, which are never repeated per beam. The
attention weights `step` returns are the last layer's cross-attention weights averaged over its
heads (what the figures draw)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.nn import functional as F

from imcap.model.decoder import DecoderConfig
from imcap.model.sorted_captions import SortedCaptions


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

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """Training: the words `x` [B, T, W] after this layer, each seeing the words up to
        itself and its caption's regions `memory` [B, R, W]."""
        x = x + self.dropout(self.self_attention(self.self_norm(x))[0])
        attended, _ = self.cross_attention(self.cross_norm(x), memory, memory,
                                           need_weights=False)
        return self._feed_forward(x + self.dropout(attended))

    def project_regions(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The cross-attention keys and values [I, heads, R, W/heads] of the regions `memory`
        [I, R, W] of I images (`nn.MultiheadAttention`'s projection), for `step`."""
        images, regions, width = memory.shape
        heads = self.cross_attention.num_heads
        _, weight = self.cross_attention.in_proj_weight.split([width, 2 * width])
        _, bias = self.cross_attention.in_proj_bias.split([width, 2 * width])
        keys_values = F.linear(memory, weight, bias).view(images, regions, 2, heads, -1)
        keys, values = keys_values.permute(2, 0, 3, 1, 4).contiguous()
        return keys, values

    def step(self, x: torch.Tensor, regions: tuple[torch.Tensor, torch.Tensor], beams: int,
             cache: tuple[torch.Tensor, torch.Tensor], need_weights: bool
             ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], torch.Tensor | None]:
        """Decoding: the next words `x` [B, 1, W] after this layer, each row seeing its earlier
        words (`cache`) and the `regions` (`project_regions`) of its image, rows `beams` at a
        time per image; with the self-attention keys and values so far and (`need_weights`)
        the cross-attention weights [B, R] averaged over the heads."""
        attended, cache = self.self_attention(self.self_norm(x), cache)
        x = x + self.dropout(attended)
        attended, weights = self._attend_regions(self.cross_norm(x), *regions, beams,
                                                 need_weights)
        return self._feed_forward(x + self.dropout(attended)), cache, weights

    def _attend_regions(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                        beams: int, need_weights: bool
                        ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`nn.MultiheadAttention(x, memory, memory)` for one word per row, from the keys and
        values of the memory projected already: an image's `beams` rows are its queries."""
        attention, (batch, _, width) = self.cross_attention, x.shape
        heads, dropout = attention.num_heads, attention.dropout if self.training else 0.0
        weight, bias = attention.in_proj_weight[:width], attention.in_proj_bias[:width]
        q = F.linear(x, weight, bias).view(-1, beams, heads, width // heads).transpose(1, 2)
        weights = None
        if need_weights:  # what nn.MultiheadAttention computes when it returns the weights
            weights = torch.softmax((q * math.sqrt(1.0 / q.size(3))) @ keys.transpose(2, 3),
                                    dim=3)  # [I, heads, beams, R]
            y = F.dropout(weights, dropout, self.training) @ values
            weights = weights.mean(dim=1).flatten(0, 1)
        else:
            y = F.scaled_dot_product_attention(q, keys, values, dropout_p=dropout)
        y = y.transpose(1, 2).reshape(batch, 1, width)
        return F.linear(y, attention.out_proj.weight, attention.out_proj.bias), weights

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.dropout(self.feed_forward(self.feed_forward_norm(x)))


@dataclass
class TransformerState:
    """B = I·beams rows: rows i·beams .. i·beams + beams - 1 are image i's."""

    regions: list[tuple[torch.Tensor, torch.Tensor]]  # per layer: cross-attention keys, values
    # [I, h, R, W/h] of each image's regions (with their positions), projected once
    caches: list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values [B, h, t, W/h]
    position: int  # t, the words decoded so far (BOS included)
    beams: int = 1  # rows per image

    def select(self, rows: torch.Tensor) -> TransformerState:
        """Rows by index or mask; with several rows per image, whole images (all their rows,
        in order), as beam search drops the images it is done with."""
        images = rows if self.beams == 1 else whole_images(rows, self.beams)
        return TransformerState([(k[images], v[images]) for k, v in self.regions],
                                [(k[rows], v[rows]) for k, v in self.caches], self.position,
                                self.beams)

    def repeat(self, k: int) -> TransformerState:
        """Only the caches are copied: the k rows of an image attend to its one copy of the
        regions."""
        return TransformerState(self.regions,
                                [(keys.repeat_interleave(k, dim=0),
                                  values.repeat_interleave(k, dim=0))
                                 for keys, values in self.caches], self.position, self.beams * k)

    def follow(self, rows: torch.Tensor) -> TransformerState:
        """An image's rows share its regions: only the caches follow `rows`."""
        return replace(self, caches=[(k[rows], v[rows]) for k, v in self.caches])


def whole_images(rows: torch.Tensor, beams: int) -> torch.Tensor:
    """The images whose rows `rows` (indices or a mask) picks, `beams` rows per image; a
    ValueError unless it picks each image's rows all, in order."""
    if rows.dtype == torch.bool:
        rows = rows.nonzero().squeeze(1)
    images = rows[::beams] // beams
    if (len(rows) % beams
            or not torch.equal(rows.view(-1, beams), images.unsqueeze(1) * beams
                               + torch.arange(beams, device=rows.device))):
        raise ValueError(f"with {beams} rows per image, select must pick whole images")
    return images


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
            x = layer(x, memory)
        return self.out(self.norm(captions.words_of(x)))

    def compile_steps(self) -> None:
        """`torch.compile` each layer (`train.compile`), for batches of any shape."""
        for layer in self.layers:
            layer.compile(dynamic=True)

    def start(self, grid: torch.Tensor, pooled: torch.Tensor) -> TransformerState:
        """No word yet: each layer's keys and values of the regions, and empty caches."""
        memory = self._memory(grid)
        empty = memory.new_zeros(len(grid), self.config.heads, 0,
                                 self.config.width // self.config.heads)
        return TransformerState([layer.project_regions(memory) for layer in self.layers],
                                [(empty, empty)] * len(self.layers), 0)

    def step(self, tokens: torch.Tensor, state: TransformerState
             ) -> tuple[torch.Tensor, TransformerState, torch.Tensor]:
        """One word: logits [B, V], the new state, the last layer's cross-attention weights
        [B, R] averaged over its heads."""
        x = self._words(tokens.unsqueeze(1), state.position)
        caches, weights = [], None
        for i, (layer, regions, cache) in enumerate(zip(self.layers, state.regions,
                                                        state.caches, strict=True)):
            x, cache, weights = layer.step(x, regions, state.beams, cache,
                                           need_weights=i == len(self.layers) - 1)
            caches.append(cache)
        logits = self.out(self.norm(x[:, 0]))
        return logits, replace(state, caches=caches, position=state.position + 1), weights

    def _memory(self, grid: torch.Tensor) -> torch.Tensor:
        regions = self.feature_proj(self.feature_norm(grid.float()))
        return self.dropout(regions + grid_positions(grid.size(1), self.config.width,
                                                     grid.device))

    def _words(self, tokens: torch.Tensor, first: int) -> torch.Tensor:
        """Token ids [B, T] at positions first .. first + T - 1 as model inputs [B, T, W]."""
        positions = torch.arange(first, first + tokens.size(1), device=tokens.device)
        return self.dropout(self.embed_proj(self.embed(tokens))
                            + sinusoids(positions, self.config.width))
