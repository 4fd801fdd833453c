"""The whole `params.yaml`: every stage's sections in one model, validated by the pipeline's
first stage (`check`) whenever the file changes, and by tools and tests that need it all.

The top-level keys mirror the seed's experiment table (`dataset`, `encoder`, `embeddings`,
`attention`, `decoder`) so that `dvc exp run -S encoder=resnet101 -S attention=II` reads like a
table row; their valid values come from the registries that implement them. A stage reads only
its own model (`imcap.params_base.load_stage_params`), so that it depends on its own sections' code
only; this module, which imports them all, is a dependency of `check` alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from imcap.data.params import DATASETS, DownloadStageParams, ShapesParams, VocabStageParams
from imcap.evaluation.params import EvalStageParams
from imcap.features.params import ENCODERS, FeatureStageParams
from imcap.params_base import (
    PARAMS_FILE,
    ParamError,
    choice,
    load_yaml,
    read_params_file,
    validate_params,
)
from imcap.training.params import TrainParams, TrainStageParams

__all__ = ["REPO_PARAMS", "ParamError", "Params", "load_params", "parse_params", "repo_params"]

REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
STAGE_PARAMS = {"download": DownloadStageParams, "vocab": VocabStageParams,
                "features": FeatureStageParams, "train": TrainStageParams,
                "evaluate": EvalStageParams}


class Params(DownloadStageParams, VocabStageParams, FeatureStageParams, TrainStageParams,
             EvalStageParams):
    """The whole `params.yaml`: the union of every stage's sections, with every stage's checks;
    a key no stage reads is unknown. The fields some stages read in part, or as plain names,
    are declared here in full."""

    dataset: choice(DATASETS)
    encoder: choice(ENCODERS)
    shapes: ShapesParams
    train: TrainParams


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate a whole params file; raise `ParamError` naming the first bad value."""
    return parse_params(read_params_file(path), source=str(path))


def parse_params(raw: dict[str, Any], source: str = "params") -> Params:
    """Build `Params` from a nested dict, rejecting unknown keys, wrong types and bad values."""
    return validate_params(Params, raw, source)


def repo_params(**overrides: Any) -> Params:
    """The repository's `params.yaml` with dotted-key overrides, `dvc exp run -S` style
    (`repo_params(**{"train.epochs": 2})`): for tests and scripts that need a full config."""
    raw = load_yaml(REPO_PARAMS.read_text())
    for key, value in overrides.items():
        *sections, name = key.split(".")
        node = raw
        for section in sections:
            node = node[section]
        node[name] = value
    return parse_params(raw, source=str(REPO_PARAMS))
