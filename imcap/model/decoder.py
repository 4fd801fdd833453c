"""The caption decoder: an LSTM whose initial state comes from the pooled image vector.

Attention (the seed's table):
- `none`: the LSTM sees only the words; the image enters through the initial state (h0, c0),
  tanh-linear maps of the projected pooled vector (with `init_fc`, seed v2, after one more fully
  connected layer + ReLU).
- `I`:  additive (Bahdanau / Show-Attend-Tell), score_r = v · tanh(W f_r + U h).
- `II`: dot product, score_r = (W f_r) · h / sqrt(H), computed with `torch.bmm`.
With attention, the context vector (the weighted mean of region features) is fed to the LSTM
together with the word embedding at every step; with `attention_gate` (Show-Attend-Tell, Xu et
al. 2015) it is first scaled by a gate β = σ(w · h + b) of the previous hidden state (one scalar
per caption and step, as in the paper; the PyTorch tutorial's `f_beta` gates each channel).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from imcap.model.params import ATTENTIONS, ModelParams
from imcap.model.sorted_captions import SortedCaptions


@dataclass(frozen=True)
class DecoderConfig:
    vocab_size: int
    embed_dim: int
    encoder_channels: int  # C, the channels of the encoder's region features
    projection_size: int  # P, what the decoder projects region features to
    hidden_size: int
    attention: str  # none | I | II
    attention_size: int
    dropout: float
    # The defaults below load checkpoints saved before these fields existed (LSTMs without
    # init_fc); they equal params.yaml's `model` section (tests/test_defaults.py).
    init_fc: bool = False  # seed v2: a fully connected layer between image vector and (h0, c0)
    attention_gate: bool = False  # Show-Attend-Tell's gate on the context (attention I / II)
    decoder: str = "lstm"  # lstm | transformer | updown (checkpoints from before v8 are LSTMs)
    layers: int = 2  # the transformer's; the LSTM and Up-Down ignore these three
    heads: int = 4
    width: int = 128

    @classmethod
    def from_params(cls, attention: str, model: ModelParams, *, decoder: str, vocab_size: int,
                    embed_dim: int, encoder_channels: int) -> DecoderConfig:
        """The decoder the `decoder` / `attention` / `model` params describe, sized for its
        data."""
        return cls(vocab_size=vocab_size, embed_dim=embed_dim, encoder_channels=encoder_channels,
                   projection_size=model.projection_size, hidden_size=model.hidden_size,
                   attention=attention, attention_size=model.attention_size,
                   dropout=model.dropout, init_fc=model.init_fc,
                   attention_gate=model.attention_gate, decoder=decoder,
                   layers=model.transformer_layers, heads=model.transformer_heads,
                   width=model.transformer_width)

    def as_dict(self) -> dict:
        return asdict(self)


class AdditiveAttention(nn.Module):
    """Attention I: v · tanh(W f + U h)."""

    def __init__(self, projection_size: int, hidden_size: int, attention_size: int) -> None:
        super().__init__()
        self.feature_proj = nn.Linear(projection_size, attention_size)
        self.hidden_proj = nn.Linear(hidden_size, attention_size)
        self.score = nn.Linear(attention_size, 1)

    def prepare(self, grid: torch.Tensor) -> torch.Tensor:
        return self.feature_proj(grid)  # [B, R, A], once per batch

    def forward(self, keys: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        energy = torch.tanh(keys + self.hidden_proj(hidden).unsqueeze(1))
        return self.score(energy).squeeze(2)  # [B, R]


class DotAttention(nn.Module):
    """Attention II: scaled dot product between projected regions and the hidden state (bmm)."""

    def __init__(self, projection_size: int, hidden_size: int) -> None:
        super().__init__()
        self.feature_proj = nn.Linear(projection_size, hidden_size)
        self.scale = 1.0 / math.sqrt(hidden_size)

    def prepare(self, grid: torch.Tensor) -> torch.Tensor:
        return self.feature_proj(grid)  # [B, R, H]

    def forward(self, keys: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        return torch.bmm(keys, hidden.unsqueeze(2)).squeeze(2) * self.scale  # [B, R]


def attention_module(config: DecoderConfig) -> AdditiveAttention | DotAttention | None:
    """Attention `config.attention` over regions of `projection_size` channels from a state of
    `hidden_size` (None for `none`)."""
    if config.attention == "I":
        return AdditiveAttention(config.projection_size, config.hidden_size,
                                 config.attention_size)
    if config.attention == "II":
        return DotAttention(config.projection_size, config.hidden_size)
    return None


@dataclass
class DecoderState:
    h: torch.Tensor
    c: torch.Tensor
    grid: torch.Tensor  # [B, R, P] projected region features
    keys: torch.Tensor | None  # attention keys [B, R, A], None without attention

    def select(self, rows: torch.Tensor) -> DecoderState:
        keys = self.keys[rows] if self.keys is not None else None
        return DecoderState(self.h[rows], self.c[rows], self.grid[rows], keys)

    def repeat(self, k: int) -> DecoderState:
        keys = self.keys.repeat_interleave(k, dim=0) if self.keys is not None else None
        return DecoderState(self.h.repeat_interleave(k, dim=0),
                            self.c.repeat_interleave(k, dim=0),
                            self.grid.repeat_interleave(k, dim=0), keys)

    def follow(self, rows: torch.Tensor) -> DecoderState:
        """An image's rows share its grid and keys: only h and c follow `rows`."""
        return DecoderState(self.h[rows], self.c[rows], self.grid, self.keys)


class CaptionDecoder(nn.Module):
    def __init__(self, config: DecoderConfig, embeddings: torch.Tensor | None = None,
                 freeze_embeddings: bool = False) -> None:
        super().__init__()
        self.config = config
        if config.attention not in ATTENTIONS:
            raise ValueError(f"unknown attention {config.attention!r}; "
                             f"valid: {', '.join(ATTENTIONS)}")
        self.embed = nn.Embedding(config.vocab_size, config.embed_dim)
        if embeddings is not None:
            self.embed.weight.data.copy_(embeddings)
        self.embed.weight.requires_grad_(not freeze_embeddings)
        # Random-weight and pretrained trunks differ wildly in feature scale; normalising each
        # region vector makes one set of hyperparameters work for every encoder. Projecting
        # C -> P once per batch keeps every decoding step cheap (C is 2048 for ResNet-101).
        self.feature_norm = nn.LayerNorm(config.encoder_channels)
        self.feature_proj = nn.Linear(config.encoder_channels, config.projection_size)
        self.init_fc = (nn.Sequential(nn.Linear(config.projection_size, config.projection_size),
                                      nn.ReLU(), nn.Dropout(config.dropout))
                        if config.init_fc else nn.Identity())
        self.init_h = nn.Linear(config.projection_size, config.hidden_size)
        self.init_c = nn.Linear(config.projection_size, config.hidden_size)
        self.attention = attention_module(config)
        self.gate = (nn.Linear(config.hidden_size, 1)
                     if config.attention_gate and self.attention is not None else None)
        context_dim = config.projection_size if self.attention is not None else 0
        self.cell = nn.LSTMCell(config.embed_dim + context_dim, config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)
        self.out = nn.Linear(config.hidden_size, config.vocab_size)

    def start(self, grid: torch.Tensor, pooled: torch.Tensor) -> DecoderState:
        """Initial state from the image: h0, c0 from the pooled vector; attention keys."""
        grid = self.feature_proj(self.feature_norm(grid.float()))
        pooled = self.init_fc(self.feature_proj(self.feature_norm(pooled.float())))
        keys = self.attention.prepare(grid) if self.attention is not None else None
        return DecoderState(torch.tanh(self.init_h(pooled)), torch.tanh(self.init_c(pooled)),
                            grid, keys)

    def step(self, tokens: torch.Tensor, state: DecoderState
             ) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
        """One word: returns logits [B, V], the new state, attention weights [B, R] or None."""
        inputs = self.embed(tokens)
        alpha = None
        if self.attention is not None:
            alpha, context = self._attend(state.keys, state.grid, state.h)
            inputs = torch.cat([inputs, context], dim=1)
        h, c = self.cell(inputs, (state.h, state.c))
        logits = self.out(self.dropout(h))
        return logits, DecoderState(h, c, state.grid, state.keys), alpha

    def forward(self, grid: torch.Tensor, pooled: torch.Tensor, captions: SortedCaptions,
                teacher_forcing: float = 1.0, coverage: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits [N, V] of the words to predict, in the order of `captions.targets`; `grid`
        and `pooled` hold each image once (`captions.owner` says whose caption is whose). With
        `coverage` (attention only), also each caption's attention summed over its steps
        [M, R] (in the order of `captions.tokens`), for the doubly stochastic regularisation.

        Each image is projected once however many captions it has, and step t runs only the
        `captions.steps[t]` captions still being read (`nn.LSTMCell`: on the CPU, as fast as
        summing its gates by hand with the words' share computed up front, or faster;
        `benchmarks/training.py`). The words are embedded, and the output layer runs, once over
        all steps, except at steps whose prediction is fed back: with `teacher_forcing` < 1 each
        step feeds the model's own previous prediction instead of the true word with
        probability 1 - teacher_forcing (the seed's v1 used 0.9), drawn up front on the CPU,
        so no step waits for the device. The arithmetic is `step`'s (a test holds them equal).
        """
        state = self.start(grid, pooled).select(captions.owner)
        steps = captions.steps
        words = self.embed(captions.words_of(captions.tokens[:, :-1])).split(steps)
        if self.attention is not None:
            keys, grid = prefixes(state.keys, steps), prefixes(state.grid, steps)
        own_word = (torch.rand(len(steps)) >= teacher_forcing).tolist()
        if coverage and self.attention is None:
            raise ValueError("coverage needs a decoder with attention")
        h, c, fed_back = state.h, state.c, None
        hidden, alphas = [], []
        for t, rows in enumerate(steps):
            h, c = h[:rows], c[:rows]
            inputs = words[t] if fed_back is None else self.embed(fed_back[:rows])
            if self.attention is not None:
                h, c, alpha = self._recur(inputs, h, c, keys[t], grid[t])
                if coverage:
                    alphas.append(alpha)
            else:
                h, c, _ = self._recur(inputs, h, c)
            hidden.append(h)
            fed_back = (self.out(self.dropout(h)).argmax(dim=1)
                        if own_word[t] and t + 1 < len(steps) else None)
        logits = self.out(self.dropout(torch.cat(hidden)))
        if not coverage:
            return logits
        rows = len(captions.tokens)  # step t's attention covers the first steps[t] captions
        summed = sum(nn.functional.pad(alpha, (0, 0, 0, rows - len(alpha))) for alpha in alphas)
        return logits, summed

    def _recur(self, inputs: torch.Tensor, h: torch.Tensor, c: torch.Tensor,
               keys: torch.Tensor | None = None, grid: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One training step's (h, c) from the word vectors `inputs`, and its attention
        weights (None without attention; `compile_steps` compiles this)."""
        alpha = None
        if keys is not None:
            alpha, context = self._attend(keys, grid, h)
            inputs = torch.cat([inputs, context], dim=1)
        h, c = self.cell(inputs, (h, c))
        return h, c, alpha

    def compile_steps(self) -> None:
        """`torch.compile` the step of training's time loop (`train.compile`): the loop runs a
        different number of steps on fewer captions each batch, which would recompile a
        compiled `forward` every batch; one step compiles once, for any batch size."""
        self._recur = torch.compile(self._recur, dynamic=True)

    def _attend(self, keys: torch.Tensor, grid: torch.Tensor, hidden: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention weights [B, R] over the regions given the hidden state, and the context
        vector [B, P] they weigh from `grid`."""
        alpha = torch.softmax(self.attention(keys, hidden), dim=1)
        context = torch.bmm(alpha.unsqueeze(1), grid).squeeze(1)
        if self.gate is not None:
            context = torch.sigmoid(self.gate(hidden)) * context
        return alpha, context


class _Prefixes(torch.autograd.Function):
    """`x[:n]` for each n of `sizes`, as one autograd node: backward adds each gradient into
    its prefix of one buffer, where slicing step by step would build a zero-filled gradient
    of the whole of `x` for every step (on the CPU 3-9 % more training tokens/s than plain
    slices with attention I and II: `benchmarks/training.py`, loop `slices`)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
        ctx.sizes, ctx.rows = sizes, len(x)
        return tuple(x[:n] for n in sizes)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor | None) -> tuple[torch.Tensor, None]:
        total = None
        for n, grad in zip(ctx.sizes, grads, strict=True):
            if grad is None:
                continue
            if total is None:
                total = grad.new_zeros((ctx.rows, *grad.shape[1:]))
            total[:n] += grad
        return total, None


def prefixes(x: torch.Tensor, sizes: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    """The leading rows `x[:n]` for each n in `sizes`."""
    return _Prefixes.apply(x, sizes)
