"""Params for tests: the repository's `params.yaml` with a few values changed, the way
`dvc exp run -S` changes them (every key must be set: `params.yaml` is the one place of
defaults)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from imcap.features.params import FeaturesParams
from imcap.params import REPO_PARAMS, parse_params
from imcap.training.params import TrainParams

DEFAULTS: dict[str, Any] = yaml.safe_load(REPO_PARAMS.read_text())


def merged(overrides: dict[str, Any]) -> dict[str, Any]:
    """The repository's params with `overrides` (nested like params.yaml) merged in."""
    def merge(base: Any, update: Any) -> Any:
        if isinstance(base, dict) and isinstance(update, dict):
            return {**base, **{k: merge(base.get(k), v) for k, v in update.items()}}
        return update

    return merge(copy.deepcopy(DEFAULTS), overrides)


def write_params(path: Path, overrides: dict[str, Any]) -> None:
    """A complete params.yaml at `path` with `overrides` merged in."""
    Path(path).write_text(yaml.safe_dump(merged(overrides), sort_keys=False))


def cpu_features(**changes: Any) -> FeaturesParams:
    """The `features` section for small CPU tests: random-weight encoder, 64 px, batches of 2."""
    return _section("features", {"weights": "none", "image_size": 64, "batch_size": 2,
                                 "device": "cpu"}, changes)


def cpu_training(**changes: Any) -> TrainParams:
    """The `train` section for small CPU tests: 8 epochs of batches of 16, Adam at 0.02, no
    early stop, captions of up to 7 words."""
    return _section("train", {"epochs": 8, "batch_size": 16, "learning_rate": 0.02,
                              "grad_clip": 1.0, "patience": 50, "max_length": 7,
                              "device": "cpu"}, changes)


def _section(name: str, test_values: dict[str, Any], changes: dict[str, Any]) -> Any:
    """One section, validated beside `decoder: lstm`: the decoder these tests build by hand
    accepts every training option (the Transformer refuses teacher forcing below 1)."""
    return getattr(parse_params(merged({"decoder": "lstm", name: {**test_values, **changes}})),
                   name)
