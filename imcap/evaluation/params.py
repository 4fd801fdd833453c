"""The `eval` section of `params.yaml` (defaults there) and what the `evaluate` stage reads;
the decoding every entry point (`imcap caption`, `imcap demo`, the served model) uses when not
told otherwise comes from the same section (`DecodingDefaults`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Self

import yaml
from pydantic import ConfigDict, Field, model_validator

from imcap.devices import DEVICES
from imcap.model.params import ATTENTIONS, DECODERS, reads_regions
from imcap.params_base import (
    BatchSize,
    NonNegative,
    NonNegativeFloat,
    Section,
    Words,
    choice,
    load_stage_params,
)
from imcap.tracking import MlflowParams

DEFAULT_BEAM = 3  # the seed's beam size
LOGGED_KEYS = ("eval.beams", "eval.length_penalty", "eval.max_length")


def default_beam(beams: list[int]) -> int:
    """The beam size the entry points decode with and whose scores head an evaluate run:
    `DEFAULT_BEAM` when `eval.beams` sweeps it, else the largest size swept."""
    return DEFAULT_BEAM if DEFAULT_BEAM in beams else max(beams)


class EvalParams(Section):
    max_length: Words  # most words in a caption (one more step may only end it with EOS)
    batch_size: BatchSize
    num_samples: NonNegative  # test images written to metrics/samples.csv
    # Beam sizes swept; beam 1 equals greedy only at length_penalty 0 (tests/test_decode_beam.py).
    beams: Annotated[list[Annotated[int, Field(gt=0, le=100)]], Field(min_length=1)]
    # Beam search scores each caption as it finishes by log P / length**length_penalty
    # (length = words + EOS, Hugging Face's form); 0 = raw log P.
    length_penalty: NonNegativeFloat
    block_trigrams: bool  # greedy and beam search: no word that repeats a trigram of the caption
    remove_bad_endings: bool  # greedy and beam search: no EOS after "a", "the", "with", ...
    # Diverse beam search (Vijayakumar et al.): the beams in beam_groups groups, each group's
    # log-probabilities less diversity_lambda x how often earlier groups chose the word at the
    # same step; 1 = plain beam search.
    beam_groups: Annotated[int, Field(gt=0, le=100)]  # at most the largest beam
    diversity_lambda: NonNegativeFloat
    meteor: bool  # METEOR needs Java (skipped, not failed, without it)
    attention_figures: NonNegative  # first test images drawn with per-word attention maps

    @property
    def default_beam(self) -> int:
        return default_beam(self.beams)

    @model_validator(mode="after")
    def _each_beam_once(self) -> Self:
        if len(set(self.beams)) != len(self.beams):
            raise ValueError(f"eval.beams lists a beam size twice: {self.beams!r}")
        if self.diversity_lambda > 0 and self.beam_groups == 1:
            raise ValueError("eval.diversity_lambda needs eval.beam_groups > 1 (diverse beam "
                             "search); set it to 0 or raise eval.beam_groups")
        uneven = [k for k in self.beams if k % self.beam_groups]
        if uneven:
            raise ValueError(f"eval.beam_groups ({self.beam_groups}) must divide every beam size "
                             f"in eval.beams; it does not divide {uneven}")
        return self


class EvalSection(Section):
    """The `eval` section alone: what the entry points' decoding defaults read."""

    eval: EvalParams


class EvalTrainParams(Section):
    """The keys of the `train` section the evaluate stage reads, where the test split goes
    (`check` validates the rest): declared for it in dvc.yaml, they rerun it."""

    model_config = ConfigDict(extra="ignore")

    device: choice(DEVICES)
    features_in_memory_gb: NonNegativeFloat


class EvalStageParams(Section):
    """What the `evaluate` stage reads (`dataset` and `encoder` only name its MLflow run)."""

    dataset: str
    encoder: str
    attention: choice(ATTENTIONS)
    decoder: choice(DECODERS)
    train: EvalTrainParams
    eval: EvalParams
    mlflow: MlflowParams

    @property
    def reads_regions(self) -> bool:
        return reads_regions(self.decoder, self.attention)


@dataclass(frozen=True)
class DecodingDefaults:
    """How a trained model decodes when a command or request does not say: beam search of
    `eval`'s default beam, with its length penalty, caption length, decoding rules and diverse
    beam search. The last four default to off for models that recorded none of them."""

    beam: int
    length_penalty: float
    max_length: int
    block_trigrams: bool = False
    remove_bad_endings: bool = False
    beam_groups: int = 1
    diversity_lambda: float = 0.0

    @classmethod
    def from_eval(cls, params: EvalParams) -> DecodingDefaults:
        return cls(params.default_beam, params.length_penalty, params.max_length,
                   params.block_trigrams, params.remove_bad_endings, params.beam_groups,
                   params.diversity_lambda)

    @classmethod
    def from_params_file(cls, path: Path) -> DecodingDefaults:
        """From the `eval` section of the params file at `path` (`ParamError` if bad)."""
        return cls.from_eval(load_stage_params(EvalSection, path).eval)

    @classmethod
    def from_logged(cls, params: Mapping[str, str]) -> DecodingDefaults | None:
        """From the flattened params an MLflow run logged (`eval.beams` = "[1, 2, 3, 5]");
        None when it logged no `eval` params."""
        if not all(key in params for key in LOGGED_KEYS):
            return None
        beams, penalty, length = (yaml.safe_load(params[key]) for key in LOGGED_KEYS)
        return cls.from_config({"beam": default_beam(beams), "length_penalty": penalty,
                                "max_length": length}
                               | {name: yaml.safe_load(params[f"eval.{name}"])
                                  for name in OPTIONAL_KEYS if f"eval.{name}" in params})

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> DecodingDefaults:
        """From a mapping of its fields (a served model's config); the optional ones it lacks
        are off."""
        return cls(int(config["beam"]), float(config["length_penalty"]),
                   int(config["max_length"]),
                   **{name: kind(config[name]) for name, kind in OPTIONAL_KEYS.items()
                      if name in config})


# The fields of `DecodingDefaults` that models recorded before they existed lack, in order.
OPTIONAL_KEYS: dict[str, type] = {"block_trigrams": bool, "remove_bad_endings": bool,
                                  "beam_groups": int, "diversity_lambda": float}
