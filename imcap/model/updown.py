"""The Up-Down decoder (Anderson et al. 2018, "Bottom-up and top-down attention"; ruotianluo's
`updown`): two LSTMs per word.

- The attention LSTM reads [h²_{t-1}, v̄, W_e y_{t-1}]: the language LSTM's previous hidden
  state, the mean v̄ of the image's region vectors and the previous word's vector.
- Its new state h¹_t attends over the regions (top-down attention: attention I or II, the LSTM
  decoder's modules): α_t = softmax(a_t), v̂_t = Σ_i α_ti v_i.
- The language LSTM reads [v̂_t, h¹_t]; the output layer reads its state h²_t (after dropout).

The regions v_i are the encoder's grid vectors layer-normalised and projected C -> P, as the LSTM
decoder projects them; v̄ is their mean, the paper's mean-pooled feature (the encoder's own
pooled vector is not read). Both LSTMs have `hidden_size` units and start from zeros, as in the
paper: the image enters through v̄ and the attention at every step.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from imcap.model.decoder import DecoderConfig, attention_module, prefixes
from imcap.model.sorted_captions import SortedCaptions

Recurrence = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass
class UpDownState:
    lstm: Recurrence  # h¹, c¹, h², c² [B, H]: the attention LSTM's, then the language LSTM's
    grid: torch.Tensor  # [B, R, P] projected region vectors
    keys: torch.Tensor  # [B, R, A] their attention keys
    mean: torch.Tensor  # [B, P] v̄, the mean region vector

    def select(self, rows: torch.Tensor) -> UpDownState:
        return UpDownState(_rows(self.lstm, rows), self.grid[rows], self.keys[rows],
                           self.mean[rows])

    def repeat(self, k: int) -> UpDownState:
        lstm = tuple(x.repeat_interleave(k, dim=0) for x in self.lstm)
        return UpDownState(lstm, self.grid.repeat_interleave(k, dim=0),
                           self.keys.repeat_interleave(k, dim=0),
                           self.mean.repeat_interleave(k, dim=0))

    def follow(self, rows: torch.Tensor) -> UpDownState:
        """An image's rows share its regions, keys and mean: only the LSTMs follow `rows`."""
        return replace(self, lstm=_rows(self.lstm, rows))


def _rows(lstm: Recurrence, rows: torch.Tensor) -> Recurrence:
    return tuple(x[rows] for x in lstm)


class UpDownCaptionDecoder(nn.Module):
    def __init__(self, config: DecoderConfig, embeddings: torch.Tensor | None = None,
                 freeze_embeddings: bool = False) -> None:
        super().__init__()
        if config.attention not in ("I", "II"):
            raise ValueError(f"the updown decoder attends over the regions: attention must be "
                             f"I or II, not {config.attention!r}")
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embed_dim)
        if embeddings is not None:
            self.embed.weight.data.copy_(embeddings)
        self.embed.weight.requires_grad_(not freeze_embeddings)
        self.feature_norm = nn.LayerNorm(config.encoder_channels)
        self.feature_proj = nn.Linear(config.encoder_channels, config.projection_size)
        hidden, regions = config.hidden_size, config.projection_size
        self.attention_lstm = nn.LSTMCell(hidden + regions + config.embed_dim, hidden)
        self.attention = attention_module(config)
        self.language_lstm = nn.LSTMCell(regions + hidden, hidden)
        self.dropout = nn.Dropout(config.dropout)
        self.out = nn.Linear(hidden, config.vocab_size)

    def start(self, grid: torch.Tensor, pooled: torch.Tensor) -> UpDownState:
        """Both LSTMs at zero; the regions projected, their keys and their mean, once per
        image (`pooled` is not read)."""
        regions = self.feature_proj(self.feature_norm(grid.float()))
        zeros = regions.new_zeros(len(grid), self.config.hidden_size)
        return UpDownState((zeros, zeros, zeros, zeros), regions,
                           self.attention.prepare(regions), regions.mean(dim=1))

    def step(self, tokens: torch.Tensor, state: UpDownState
             ) -> tuple[torch.Tensor, UpDownState, torch.Tensor]:
        """One word: logits [B, V], the new state, the attention weights [B, R]."""
        *lstm, alpha = self._recur(self.embed(tokens), *state.lstm, state.keys, state.grid,
                                   state.mean)
        return self.out(self.dropout(lstm[2])), replace(state, lstm=tuple(lstm)), alpha

    def forward(self, grid: torch.Tensor, pooled: torch.Tensor, captions: SortedCaptions,
                teacher_forcing: float = 1.0) -> torch.Tensor:
        """Logits [N, V] of the words to predict, in the order of `captions.targets`, as the
        LSTM decoder's `forward` computes them: each image projected once, step t running the
        `captions.steps[t]` captions still being read, and with `teacher_forcing` < 1 a step
        fed the model's own previous prediction with probability 1 - teacher_forcing. The
        arithmetic is `step`'s (a test holds them equal)."""
        state = self.start(grid, pooled).select(captions.owner)
        steps = captions.steps
        words = self.embed(captions.words_of(captions.tokens[:, :-1])).split(steps)
        keys, regions, mean = (prefixes(x, steps) for x in (state.keys, state.grid, state.mean))
        own_word = (torch.rand(len(steps)) >= teacher_forcing).tolist()
        lstm, fed_back, hidden = state.lstm, None, []
        for t, rows in enumerate(steps):
            inputs = words[t] if fed_back is None else self.embed(fed_back[:rows])
            *lstm, _ = self._recur(inputs, *(x[:rows] for x in lstm), keys[t], regions[t],
                                   mean[t])
            hidden.append(lstm[2])
            fed_back = (self.out(self.dropout(lstm[2])).argmax(dim=1)
                        if own_word[t] and t + 1 < len(steps) else None)
        return self.out(self.dropout(torch.cat(hidden)))

    def _recur(self, words: torch.Tensor, h1: torch.Tensor, c1: torch.Tensor, h2: torch.Tensor,
               c2: torch.Tensor, keys: torch.Tensor, grid: torch.Tensor, mean: torch.Tensor
               ) -> tuple[torch.Tensor, ...]:
        """Both LSTMs one word on from the word vectors `words`: h¹, c¹, h², c² and the
        attention weights [B, R] (`compile_steps` compiles this)."""
        h1, c1 = self.attention_lstm(torch.cat([h2, mean, words], dim=1), (h1, c1))
        alpha = torch.softmax(self.attention(keys, h1), dim=1)
        context = torch.bmm(alpha.unsqueeze(1), grid).squeeze(1)
        h2, c2 = self.language_lstm(torch.cat([context, h1], dim=1), (h2, c2))
        return h1, c1, h2, c2, alpha

    def compile_steps(self) -> None:
        """`torch.compile` the step of the time loop (`train.compile`), once for any batch
        size, as the LSTM decoder does."""
        self._recur = torch.compile(self._recur, dynamic=True)
