"""The `train` section of `params.yaml` (defaults there)."""

from __future__ import annotations

from imcap.config import Fraction, NonNegativeFloat, Positive, PositiveFloat, Section, choice
from imcap.features.config import DEVICES


class TrainParams(Section):
    epochs: Positive
    batch_size: Positive
    learning_rate: PositiveFloat
    grad_clip: PositiveFloat
    teacher_forcing: Fraction  # probability of feeding the true previous word (seed v1: 0.9)
    freeze_embeddings: bool  # keep the pretrained vectors fixed (seed v1)
    patience: Positive  # stop after this many epochs without a better validation BLEU-4
    max_length: Positive  # most words in a validation caption (greedy decoding)
    device: choice(DEVICES)
    features_in_memory_gb: NonNegativeFloat  # a split's features up to this size are held in RAM
