"""A decoder behind the tuned stages of its encoder (`train.finetune_encoder`), trained as one
model: fed what the frozen trunk computes where a decoder is fed its features, it offers the
decoder's whole interface (`imcap.model.interface.Decoder`), so that training, validation,
decoding and self-critical training run it unchanged, and DistributedDataParallel wraps
encoder and decoder together."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from imcap.model.decoder import DecoderConfig
from imcap.model.interface import Decoder, DecodingState

if TYPE_CHECKING:  # torchvision (2 s at import) only where an encoder is tuned
    from imcap.features.split_encoder import EncoderTail


class TunedCaptioner(nn.Module):
    """`tail` (trunk output → grid, pooled) in front of `decoder`. The `pooled` argument of
    `forward` and `start` is ignored: the tail computes it.

    `tuning` False runs the tail without gradients (its weights stay as they are and take no
    memory for a backward pass); its parameters still require them, so that an optimizer and
    DistributedDataParallel set up once serve the epochs before and after the tuning starts."""

    def __init__(self, tail: EncoderTail, decoder: Decoder) -> None:
        super().__init__()
        self.tail, self.decoder = tail, decoder
        self.tuning = True

    def features(self, trunk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(grid, pooled) of the frozen trunk's outputs `trunk`."""
        with torch.set_grad_enabled(self.tuning and torch.is_grad_enabled()):
            return self.tail(trunk)

    @property
    def config(self) -> DecoderConfig:
        return self.decoder.config

    @property
    def attention(self) -> nn.Module | None:
        return self.decoder.attention

    def forward(self, trunk: torch.Tensor, pooled: torch.Tensor, *args: Any, **kwargs: Any
                ) -> Any:
        """The decoder's training forward (logits, and the coverage when asked)."""
        return self.decoder(*self.features(trunk), *args, **kwargs)

    def start(self, trunk: torch.Tensor, pooled: torch.Tensor) -> DecodingState:
        return self.decoder.start(*self.features(trunk))

    def step(self, tokens: torch.Tensor, state: DecodingState
             ) -> tuple[torch.Tensor, DecodingState, torch.Tensor | None]:
        return self.decoder.step(tokens, state)

    def compile_steps(self) -> None:
        self.decoder.compile_steps()
