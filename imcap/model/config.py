"""The decoder choices (`attention`, `decoder`) and the `model` section of `params.yaml`
(defaults there): the decoder's sizes."""

from __future__ import annotations

from imcap.config import Fraction, Positive, Section

ATTENTIONS = ("none", "I", "II")  # the seed's table: none, additive, dot product (bmm)
DECODERS = ("lstm",)


class ModelParams(Section):
    projection_size: Positive  # region features are projected from the encoder's C channels
    hidden_size: Positive
    attention_size: Positive  # attention I's score space
    dropout: Fraction
    init_fc: bool  # seed v2: one more fully connected layer between image vector and LSTM state
