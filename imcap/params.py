"""Pipeline parameters: load `params.yaml` and validate every value before any work starts.

The top-level keys mirror the seed's experiment table (`dataset`, `encoder`, `embeddings`,
`attention`, `decoder`) so that `dvc exp run -S encoder=resnet101 -S attention=II` reads like a
table row; their valid values come from the registries that implement them. Each section's model
lives beside the code that reads it; this module assembles them and reports the first bad value
in one line, naming the valid choices. `params.yaml` is the one place where defaults live: a
missing key is an error, not a silent fallback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Self

import yaml
from pydantic import Field, ValidationError, model_validator

from imcap.config import NonNegative, Section, choice
from imcap.data.config import (
    DATASETS,
    EMBEDDINGS,
    RANDOM,
    DownloadParams,
    ShapesParams,
    VocabParams,
    WordVectorParams,
)
from imcap.evaluation.config import EvalParams
from imcap.features.config import ENCODERS, MIN_SIZE, NATIVE_SIZE, FeatureParams, weights_enum
from imcap.model.config import ATTENTIONS, DECODERS, ModelParams
from imcap.training.config import TrainParams

REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


class ParamError(ValueError):
    """A parameter is missing, unknown, of the wrong type or out of range."""


# What each dataset cannot do without: (dataset, keys of which at least one must be set, why).
_DATASET_NEEDS = (
    ("flickr30k", ("download.flickr30k.root", "download.flickr30k.images_url"),
     "Flickr30k images are distributed behind a form "
     "(https://shannon.cs.illinois.edu/DenotationGraph/): download flickr30k-images.tar.gz "
     "yourself and set download.flickr30k.root to the directory holding flickr30k-images/, "
     "or set download.flickr30k.images_url to a mirror"),
    ("karpathy", ("download.karpathy.json",), "the Karpathy-format caption file"),
    ("karpathy", ("download.karpathy.images",), "the directory of its images"),
    ("folder", ("download.folder.images",), "the directory of images"),
    ("folder", ("download.folder.captions",), "the CSV of `image,caption` rows"),
)


class MlflowParams(Section):
    """Read by `imcap.tracking` in the train and evaluate stages (kept here so that editing the
    tracking code does not rerun the stages that only validate this section)."""

    enabled: bool
    experiment: Annotated[str, Field(min_length=1)]


class Params(Section):
    """The whole `params.yaml`."""

    dataset: choice(DATASETS)
    encoder: choice(ENCODERS)
    embeddings: choice(EMBEDDINGS)
    attention: choice(ATTENTIONS)
    decoder: choice(DECODERS)
    seed: NonNegative  # numpy and torch generators take seeds >= 0
    shapes: ShapesParams
    download: DownloadParams
    vocab: VocabParams
    word_vectors: WordVectorParams
    features: FeatureParams
    model: ModelParams
    train: TrainParams
    eval: EvalParams
    mlflow: MlflowParams

    @property
    def reads_regions(self) -> bool:
        """Whether the decoder reads the region grid: an LSTM without attention reads only the
        pooled vectors (imcap.features.splits)."""
        return self.decoder != "lstm" or self.attention != "none"

    @model_validator(mode="before")
    @classmethod
    def _resolve_auto_image_size(cls, raw: Any) -> Any:
        """`features.image_size: auto`: `shapes.encoder_input_size` for the embedded dataset,
        else 0, the encoder's native preprocessing (ResNet 224, Inception 299, as the seed)."""
        features = raw.get("features") if isinstance(raw, dict) else None
        if isinstance(features, dict) and features.get("image_size") == "auto":
            shapes = raw.get("shapes")
            size = (shapes.get("encoder_input_size") if isinstance(shapes, dict) else None
                    ) if raw.get("dataset") == "shapes" else 0
            raw = {**raw, "features": {**features, "image_size": size}}
        return raw

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        flat = self.as_flat_dict()
        for dataset, keys, why in _DATASET_NEEDS:
            if self.dataset == dataset and not any(flat[key] for key in keys):
                raise ValueError(f"dataset {dataset} needs {' or '.join(keys)} ({why})")
        try:
            weights_enum(self.encoder, self.features.weights)
        except ValueError as err:  # e.g. no imagenet_v2 weights for this encoder
            raise ValueError(f"features.weights: {err}") from None
        size, smallest = self.features.image_size, MIN_SIZE[self.encoder]
        if 0 < size < smallest:
            raise ValueError(f"features.image_size {size} is too small for {self.encoder} (at "
                             f"least {smallest}; 0 = its native {NATIVE_SIZE[self.encoder]})")
        if self.decoder == "transformer" and self.train.teacher_forcing < 1:
            raise ValueError("train.teacher_forcing must be 1 with decoder transformer (it "
                             "trains in one causal pass over the true words)")
        if self.vocab.restrict_to_embeddings and self.embeddings == RANDOM:
            raise ValueError("vocab.restrict_to_embeddings needs pretrained embeddings, "
                             "not 'random'")
        return self

    def as_flat_dict(self) -> dict[str, Any]:
        """`{"train.epochs": 20, ...}`: the form MLflow params and DVC `-S` use."""
        return _flatten(self.model_dump(by_alias=True))


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params file; raise `ParamError` naming the first bad value."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ParamError(f"{path}: no such params file") from None
    except yaml.YAMLError as err:
        raise ParamError(f"{path}: not valid YAML: {err}") from None
    return parse_params(raw, source=str(path))


def parse_params(raw: dict[str, Any], source: str = "params") -> Params:
    """Build `Params` from a nested dict, rejecting unknown keys, wrong types and bad values."""
    if not isinstance(raw, dict):
        raise ParamError(f"{source}: expected a mapping at the top level")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ParamError(f"{source}: {_describe(err.errors()[0])}") from None


def repo_params(**overrides: Any) -> Params:
    """The repository's `params.yaml` with dotted-key overrides, `dvc exp run -S` style
    (`repo_params(**{"train.epochs": 2})`): for tests and scripts that need a full config."""
    raw = yaml.safe_load(REPO_PARAMS.read_text())
    for key, value in overrides.items():
        *sections, name = key.split(".")
        node = raw
        for section in sections:
            node = node[section]
        node[name] = value
    return parse_params(raw, source=str(REPO_PARAMS))


def _describe(error: dict[str, Any]) -> str:
    """One pydantic error as a line that names the key, the value and what was expected."""
    key = ".".join(str(part) for part in error["loc"])
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    if kind == "extra_forbidden":
        section = key.rpartition(".")[0]
        fields = _section_fields(section)
        where = f"section {section!r}" if section else "the top level"
        return (f"unknown key {key.rpartition('.')[2]!r} in {where}; "
                f"valid keys: {', '.join(fields)}")
    if kind == "missing":
        return f"{key} is missing (params.yaml sets every key; see the repository's params.yaml)"
    if kind == "choice":
        return f"{key}: {error['msg']}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind in ("model_type", "dict_type"):
        return f"{key} must be a section (mapping), got {value!r}"
    bounds = {"greater_than": "> {gt}", "greater_than_equal": ">= {ge}",
              "less_than_equal": "<= {le}", "too_short": "a non-empty list",
              "string_too_short": "a non-empty string"}
    if kind in bounds:
        return f"{key} must be {bounds[kind].format(**ctx)}, got {value!r}"
    names = {"int_type": "int", "float_type": "float", "string_type": "str",
             "bool_type": "bool", "list_type": "a list", "string_pattern_mismatch":
             "empty or 64 hex digits"}
    return f"{key} must be {names.get(kind, error['msg'])}, got {value!r}"


def _section_fields(section: str) -> list[str]:
    model: type[Section] = Params
    for name in filter(None, section.split(".")):
        model = model.model_fields[name].annotation
    return [field.alias or name for name, field in model.model_fields.items()]


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, prefix + key + "."))
        else:
            flat[prefix + key] = value
    return flat
