"""Pipeline parameters: load `params.yaml` and validate every value before any work starts.

The top-level keys mirror the seed's experiment table (`dataset`, `encoder`, `embeddings`,
`attention`, `decoder`) so that `dvc exp run -S encoder=resnet101 -S attention=II` reads like a
table row; the sections below them hold the details. Every stage calls `load_params()` first, so
a bad value in any section fails the very first stage that runs, naming the valid choices.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DATASETS = ("shapes",)
ENCODERS = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "inception_v3",
)
ENCODER_WEIGHTS = ("none",)
EMBEDDINGS = ("random",)
ATTENTIONS = ("none", "I", "II")
DECODERS = ("lstm",)
FEATURE_DTYPES = ("float16", "float32")
DEVICES = ("auto", "cpu", "cuda")


class ParamError(ValueError):
    """A parameter is missing, unknown, of the wrong type or out of range."""


@dataclass(frozen=True)
class ShapesParams:
    num_images: int = 3000
    image_size: int = 128
    val_fraction: float = 0.1
    test_fraction: float = 0.1


@dataclass(frozen=True)
class VocabParams:
    min_count: int = 5
    max_length: int = 20


@dataclass(frozen=True)
class EmbeddingParams:
    dim: int = 128


@dataclass(frozen=True)
class FeatureParams:
    weights: str = "none"
    image_size: int = 160
    batch_size: int = 32
    dtype: str = "float16"
    device: str = "auto"
    num_workers: int = 0


@dataclass(frozen=True)
class ModelParams:
    feature_size: int = 256
    hidden_size: int = 256
    attention_size: int = 128
    dropout: float = 0.3


@dataclass(frozen=True)
class TrainParams:
    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 0.002
    grad_clip: float = 5.0
    teacher_forcing: float = 1.0
    patience: int = 3
    max_length: int = 20
    device: str = "auto"


@dataclass(frozen=True)
class EvalParams:
    max_length: int = 20
    batch_size: int = 256
    num_samples: int = 25


@dataclass(frozen=True)
class MlflowParams:
    enabled: bool = True
    experiment: str = "imcap"


@dataclass(frozen=True)
class Params:
    dataset: str = "shapes"
    encoder: str = "resnet18"
    embeddings: str = "random"
    attention: str = "I"
    decoder: str = "lstm"
    seed: int = 0
    shapes: ShapesParams = field(default_factory=ShapesParams)
    vocab: VocabParams = field(default_factory=VocabParams)
    embedding: EmbeddingParams = field(default_factory=EmbeddingParams)
    features: FeatureParams = field(default_factory=FeatureParams)
    model: ModelParams = field(default_factory=ModelParams)
    train: TrainParams = field(default_factory=TrainParams)
    eval: EvalParams = field(default_factory=EvalParams)
    mlflow: MlflowParams = field(default_factory=MlflowParams)

    def as_flat_dict(self) -> dict[str, Any]:
        """`{"train.epochs": 12, ...}`: the form MLflow params and DVC `-S` use."""
        return _flatten(dataclasses.asdict(self))


# (field path, allowed choices) and (field path, lower bound, inclusive?) checks.
_CHOICES: dict[str, tuple[str, ...]] = {
    "dataset": DATASETS,
    "encoder": ENCODERS,
    "embeddings": EMBEDDINGS,
    "attention": ATTENTIONS,
    "decoder": DECODERS,
    "features.weights": ENCODER_WEIGHTS,
    "features.dtype": FEATURE_DTYPES,
    "features.device": DEVICES,
    "train.device": DEVICES,
}
_POSITIVE = (
    "shapes.num_images",
    "shapes.image_size",
    "vocab.min_count",
    "vocab.max_length",
    "embedding.dim",
    "features.image_size",
    "features.batch_size",
    "model.feature_size",
    "model.hidden_size",
    "model.attention_size",
    "train.epochs",
    "train.batch_size",
    "train.learning_rate",
    "train.grad_clip",
    "train.patience",
    "train.max_length",
    "eval.max_length",
    "eval.batch_size",
)
_NON_NEGATIVE = ("features.num_workers",)
_FRACTIONS = (
    "shapes.val_fraction",
    "shapes.test_fraction",
    "model.dropout",
    "train.teacher_forcing",
)


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
    params = _build(Params, raw, prefix="", source=source)
    flat = params.as_flat_dict()
    for key, choices in _CHOICES.items():
        if flat[key] not in choices:
            raise ParamError(
                f"{source}: {key}: unknown value {flat[key]!r}; valid choices: {', '.join(choices)}"
            )
    for key in _POSITIVE:
        if flat[key] <= 0:
            raise ParamError(f"{source}: {key} must be > 0, got {flat[key]!r}")
    for key in _NON_NEGATIVE:
        if flat[key] < 0:
            raise ParamError(f"{source}: {key} must be >= 0, got {flat[key]!r}")
    for key in _FRACTIONS:
        if not 0 <= flat[key] <= 1:
            raise ParamError(f"{source}: {key} must be between 0 and 1, got {flat[key]!r}")
    if flat["shapes.val_fraction"] + flat["shapes.test_fraction"] >= 1:
        raise ParamError(f"{source}: shapes.val_fraction + shapes.test_fraction must be < 1")
    return params


def _build(cls: type, raw: dict[str, Any], prefix: str, source: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        where = f"section {prefix.rstrip('.')!r}" if prefix else "the top level"
        raise ParamError(
            f"{source}: unknown key {unknown[0]!r} in {where}; "
            f"valid keys: {', '.join(fields)}"
        )
    values: dict[str, Any] = {}
    for name, value in raw.items():
        default = getattr(cls(), name)
        key = prefix + name
        if dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                raise ParamError(f"{source}: {key} must be a section (mapping), got {value!r}")
            values[name] = _build(type(default), value, prefix=key + ".", source=source)
        else:
            values[name] = _coerce(value, type(default), key, source)
    return cls(**values)


def _coerce(value: Any, kind: type, key: str, source: str) -> Any:
    # YAML gives an int where a float may be meant (`learning_rate: 1`), and a number where a
    # string choice is compared (it then fails the choice check, naming the valid ones).
    # bool is an int subclass: reject it explicitly.
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, bool) and kind is not bool:
        raise ParamError(f"{source}: {key} must be {kind.__name__}, got {value!r}")
    if not isinstance(value, kind):
        raise ParamError(f"{source}: {key} must be {kind.__name__}, got {value!r}")
    return value


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, prefix + key + "."))
        else:
            flat[prefix + key] = value
    return flat
