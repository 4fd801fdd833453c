"""The decoder choices (`attention`, `decoder`) and the `model` section of `params.yaml`
(defaults there): the decoder's sizes."""

from __future__ import annotations

from pydantic import model_validator

from imcap.config import Fraction, Positive, Section

ATTENTIONS = ("none", "I", "II")  # the seed's table: none, additive, dot product (bmm)
DECODERS = ("lstm", "transformer")  # builders: imcap.model.registry


class ModelParams(Section):
    projection_size: Positive  # (lstm) region features are projected from the encoder's C channels
    hidden_size: Positive  # (lstm)
    attention_size: Positive  # (lstm) attention I's score space
    dropout: Fraction
    init_fc: bool  # (lstm) seed v2: one more fully connected layer between image vector and state
    transformer_layers: Positive
    transformer_heads: Positive
    transformer_width: Positive  # model width: words and regions are projected to it

    @model_validator(mode="after")
    def _heads_divide_width(self) -> ModelParams:
        if self.transformer_width % self.transformer_heads:
            raise ValueError(f"transformer_width ({self.transformer_width}) must be a multiple "
                             f"of transformer_heads ({self.transformer_heads})")
        return self
