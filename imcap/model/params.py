"""The decoder choices (`attention`, `decoder`) and the `model` section of `params.yaml`
(defaults there): the decoder's sizes."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from imcap.params_base import Fraction, Section

ATTENTIONS = ("none", "I", "II")  # the seed's table: none, additive, dot product (bmm)
DECODERS = ("lstm", "transformer", "updown")  # builders: imcap.model.registry
# Bounds that refuse a typo before any memory is allocated (hidden_size 4096 is an LSTM of
# ~0.5 GB; the seed's is 512).
Size = Annotated[int, Field(gt=0, le=4096)]
Layers = Annotated[int, Field(gt=0, le=48)]
Heads = Annotated[int, Field(gt=0, le=64)]


def reads_regions(decoder: str, attention: str) -> bool:
    """Whether the decoder reads the region grid: an LSTM without attention reads only the
    pooled vectors (imcap.features.splits)."""
    return decoder != "lstm" or attention != "none"


class ModelParams(Section):
    projection_size: Size  # (lstm, updown) what region features are projected to from C channels
    hidden_size: Size  # (lstm, updown: each of its two LSTMs)
    attention_size: Size  # (lstm, updown) attention I's score space
    dropout: Fraction
    init_fc: bool  # (lstm) seed v2: one more fully connected layer between image vector and state
    attention_gate: bool  # (lstm, attention I / II) Show-Attend-Tell gate sigmoid(w . h) on context
    transformer_layers: Layers
    transformer_heads: Heads
    transformer_width: Size  # model width: words and regions are projected to it

    @model_validator(mode="after")
    def _heads_divide_width(self) -> ModelParams:
        if self.transformer_width % self.transformer_heads:
            raise ValueError(f"transformer_width ({self.transformer_width}) must be a multiple "
                             f"of transformer_heads ({self.transformer_heads})")
        return self
