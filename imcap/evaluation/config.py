"""The `eval` section of `params.yaml` (defaults there)."""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import Field, model_validator

from imcap.config import NonNegative, NonNegativeFloat, Positive, Section


class EvalParams(Section):
    max_length: Positive  # most words in a caption (one more step may only end it with EOS)
    batch_size: Positive
    num_samples: NonNegative  # test images written to metrics/samples.csv
    beams: Annotated[list[Positive], Field(min_length=1)]  # beam sizes swept (1 = greedy)
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
