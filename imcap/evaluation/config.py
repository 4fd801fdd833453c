"""The `eval` section of `params.yaml` (defaults there) and what the `evaluate` stage reads."""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import Field, model_validator

from imcap.config import NonNegative, NonNegativeFloat, Positive, Section, choice
from imcap.model.config import ATTENTIONS, DECODERS, reads_regions
from imcap.training.config import MlflowParams, TrainParams


class EvalParams(Section):
    max_length: Positive  # most words in a caption (one more step may only end it with EOS)
    batch_size: Positive
    num_samples: NonNegative  # test images written to metrics/samples.csv
    # Beam sizes swept; beam 1 equals greedy only at length_penalty 0 (tests/test_decode_beam.py).
    beams: Annotated[list[Positive], Field(min_length=1)]
    # Beam search scores each caption as it finishes by log P / length**length_penalty
    # (length = words + EOS, Hugging Face's form); 0 = raw log P.
    length_penalty: NonNegativeFloat
    meteor: bool  # METEOR needs Java (skipped, not failed, without it)
    attention_figures: NonNegative  # first test images drawn with per-word attention maps

    @model_validator(mode="after")
    def _each_beam_once(self) -> Self:
        if len(set(self.beams)) != len(self.beams):
            raise ValueError(f"eval.beams lists a beam size twice: {self.beams!r}")
        return self


class EvalStageParams(Section):
    """What the `evaluate` stage reads (`train.device` and `train.features_in_memory_gb` say
    where the test split goes; `dataset` and `encoder` only name its MLflow run)."""

    dataset: str
    encoder: str
    attention: choice(ATTENTIONS)
    decoder: choice(DECODERS)
    train: TrainParams
    eval: EvalParams
    mlflow: MlflowParams

    @property
    def reads_regions(self) -> bool:
        return reads_regions(self.decoder, self.attention)
