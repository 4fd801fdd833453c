"""Pipeline parameters: load `params.yaml` and validate every value before any work starts.

The top-level keys mirror the seed's experiment table (`dataset`, `encoder`, `embeddings`,
`attention`, `decoder`) so that `dvc exp run -S encoder=resnet101 -S attention=II` reads like a
table row; the sections below them hold the details. Every stage calls `load_params()` first, so
a bad value in any section fails the very first stage that runs, naming the valid choices.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DATASETS = ("shapes", "flickr8k", "flickr30k", "coco2014", "karpathy", "folder")
BAD_IMAGE_POLICIES = ("fail", "skip")
RESTVAL_POLICIES = ("train", "drop")
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
# Mirrors imcap.features.encoders.WEIGHTS:
# none (seeded random init), torchvision IMAGENET1K_V1 / _V2.
ENCODER_WEIGHTS = ("none", "imagenet", "imagenet_v2")
# IMAGENET1K_V2 exists for these encoders only (torchvision).
IMAGENET_V2_ENCODERS = ("resnet50", "resnet101", "resnet152", "resnext50_32x4d",
                        "resnext101_32x8d")
# Mirrors imcap.data.embeddings.CHOICES (a test keeps them equal; importing it here would be
# circular).
EMBEDDINGS = (
    "random",
    "glove.6B.50d-offline",
    "glove.6B.50d",
    "glove.6B.100d",
    "glove.6B.200d",
    "glove.6B.300d",
    "crawl-300d-2M",
)
ATTENTIONS = ("none", "I", "II")
DECODERS = ("lstm",)
FEATURE_DTYPES = ("float16", "float32")
FEATURE_DECODERS = ("auto", "pil", "nvjpeg")  # auto: nvjpeg on a GPU, pil on CPU
FEATURE_PRECISIONS = ("auto", "float32", "bfloat16")  # auto: bfloat16 on a GPU, float32 on CPU
DEVICES = ("auto", "cpu", "cuda")


class ParamError(ValueError):
    """A parameter is missing, unknown, of the wrong type or out of range."""


@dataclass(frozen=True)
class ShapesParams:
    num_images: int = 3000
    image_size: int = 160
    val_fraction: float = 0.1
    test_fraction: float = 0.1


# Real datasets (section `download`, read by the download stage only). "" means "not set".
KARPATHY_SPLITS_URL = (
    "https://huggingface.co/datasets/gpantaz/karpathy_split/resolve/main/caption_datasets.zip")
FLICKR8K_URL = "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/"


@dataclass(frozen=True)
class Flickr8kParams:
    root: str = ""  # an existing copy: read in place, nothing downloaded
    images_url: str = FLICKR8K_URL + "Flickr8k_Dataset.zip"
    images_sha256: str = ""
    text_url: str = FLICKR8K_URL + "Flickr8k_text.zip"
    text_sha256: str = ""
    karpathy_splits: bool = False  # False: the official split lists in Flickr8k_text.zip


@dataclass(frozen=True)
class Flickr30kParams:
    root: str = ""
    images_url: str = ""  # distributed behind a form: no public default
    images_sha256: str = ""


@dataclass(frozen=True)
class Coco2014Params:
    root: str = ""
    train_url: str = "http://images.cocodataset.org/zips/train2014.zip"
    train_sha256: str = ""
    val_url: str = "http://images.cocodataset.org/zips/val2014.zip"
    val_sha256: str = ""
    annotations_url: str = (
        "http://images.cocodataset.org/annotations/annotations_trainval2014.zip")
    annotations_sha256: str = ""
    karpathy_splits: bool = True  # False: official captions, val2014 split by `seed`
    val_test_size: int = 5000  # without Karpathy splits: val2014 images for val, and for test


@dataclass(frozen=True)
class KarpathyParams:
    json: str = ""  # any Karpathy-format caption file
    images: str = ""  # the directory its `filepath/filename`s are relative to


@dataclass(frozen=True)
class FolderParams:
    images: str = ""  # a directory of images
    captions: str = ""  # CSV with header `image,caption`, one row per caption
    val_fraction: float = 0.1
    test_fraction: float = 0.1


@dataclass(frozen=True)
class DownloadParams:
    on_bad_image: str = "fail"  # or "skip": drop missing/corrupt images, list them
    restval: str = "train"  # Karpathy COCO `restval`: "train" or "drop"
    keep_archives: bool = False
    check_workers: int = 0  # processes decoding every image once; 0 = all CPUs
    splits_url: str = KARPATHY_SPLITS_URL  # caption_datasets.zip (Karpathy splits)
    splits_sha256: str = ""
    flickr8k: Flickr8kParams = field(default_factory=Flickr8kParams)
    flickr30k: Flickr30kParams = field(default_factory=Flickr30kParams)
    coco2014: Coco2014Params = field(default_factory=Coco2014Params)
    karpathy: KarpathyParams = field(default_factory=KarpathyParams)
    folder: FolderParams = field(default_factory=FolderParams)


@dataclass(frozen=True)
class VocabParams:
    min_count: int = 5
    max_length: int = 20
    restrict_to_embeddings: bool = False


@dataclass(frozen=True)
class EmbeddingParams:
    dim: int = 128
    glove_url: str = "https://nlp.stanford.edu/data/glove.6B.zip"
    glove_sha256: str = ""
    fasttext_url: str = (
        "https://dl.fbaipublicfiles.com/fasttext/vectors-english/crawl-300d-2M.vec.zip")
    fasttext_sha256: str = ""


@dataclass(frozen=True)
class FeatureParams:
    weights: str = "none"
    image_size: int = 96  # 0: the encoder's native size (224, Inception 299)
    batch_size: int = 0  # 0: 256 on a GPU, 32 on CPU
    dtype: str = "float16"
    device: str = "auto"
    num_workers: int = -1  # -1: up to 16 on a GPU, none on CPU
    decode: str = "auto"
    precision: str = "auto"
    processes: int = 1  # > 1: torchrun, one process per GPU


@dataclass(frozen=True)
class ModelParams:
    feature_size: int = 256
    hidden_size: int = 256
    attention_size: int = 128
    dropout: float = 0.1


@dataclass(frozen=True)
class TrainParams:
    epochs: int = 20
    batch_size: int = 128
    learning_rate: float = 0.003
    grad_clip: float = 5.0
    teacher_forcing: float = 1.0
    freeze_embeddings: bool = False
    patience: int = 5
    max_length: int = 20
    device: str = "auto"
    features_in_memory_gb: float = 2.0  # a split's features up to this size are held in RAM


@dataclass(frozen=True)
class EvalParams:
    max_length: int = 20
    batch_size: int = 256
    num_samples: int = 25
    beams: list[int] = field(default_factory=lambda: [1, 2, 3, 5])
    length_penalty: float = 0.0
    meteor: bool = True
    attention_figures: int = 4


@dataclass(frozen=True)
class MlflowParams:
    enabled: bool = True
    experiment: str = "imcap"


@dataclass(frozen=True)
class Params:
    dataset: str = "shapes"
    encoder: str = "resnet18"
    embeddings: str = "glove.6B.50d-offline"
    attention: str = "I"
    decoder: str = "lstm"
    seed: int = 0
    shapes: ShapesParams = field(default_factory=ShapesParams)
    download: DownloadParams = field(default_factory=DownloadParams)
    vocab: VocabParams = field(default_factory=VocabParams)
    embedding: EmbeddingParams = field(default_factory=EmbeddingParams)
    features: FeatureParams = field(default_factory=FeatureParams)
    model: ModelParams = field(default_factory=ModelParams)
    train: TrainParams = field(default_factory=TrainParams)
    eval: EvalParams = field(default_factory=EvalParams)
    mlflow: MlflowParams = field(default_factory=MlflowParams)

    def as_flat_dict(self) -> dict[str, Any]:
        """`{"train.epochs": 20, ...}`: the form MLflow params and DVC `-S` use."""
        return _flatten(dataclasses.asdict(self))


# (field path, allowed choices) and (field path, lower bound, inclusive?) checks.
_CHOICES: dict[str, tuple[str, ...]] = {
    "dataset": DATASETS,
    "download.on_bad_image": BAD_IMAGE_POLICIES,
    "download.restval": RESTVAL_POLICIES,
    "encoder": ENCODERS,
    "embeddings": EMBEDDINGS,
    "attention": ATTENTIONS,
    "decoder": DECODERS,
    "features.weights": ENCODER_WEIGHTS,
    "features.dtype": FEATURE_DTYPES,
    "features.decode": FEATURE_DECODERS,
    "features.precision": FEATURE_PRECISIONS,
    "features.device": DEVICES,
    "train.device": DEVICES,
}
_POSITIVE = (
    "shapes.num_images",
    "shapes.image_size",
    "download.coco2014.val_test_size",
    "vocab.min_count",
    "vocab.max_length",
    "embedding.dim",
    "features.processes",
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
_NON_NEGATIVE = ("download.check_workers", "eval.length_penalty", "eval.attention_figures",
                 "features.image_size", "features.batch_size", "train.features_in_memory_gb")
_FRACTIONS = (
    "shapes.val_fraction",
    "shapes.test_fraction",
    "download.folder.val_fraction",
    "download.folder.test_fraction",
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
    _check_download(flat, source)
    _check_features(flat, source)
    _check_beams(flat["eval.beams"], source)
    for key in ("embedding.glove_sha256", "embedding.fasttext_sha256"):
        if flat[key] and not re.fullmatch(r"[0-9a-fA-F]{64}", flat[key]):
            raise ParamError(f"{source}: {key} must be empty or 64 hex digits, got {flat[key]!r}")
    if flat["vocab.restrict_to_embeddings"] and flat["embeddings"] == "random":
        raise ParamError(f"{source}: vocab.restrict_to_embeddings needs pretrained embeddings, "
                         "not 'random'")
    return params


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


def _check_download(flat: dict[str, Any], source: str) -> None:
    """The `download` section: checksums are hex, and the selected dataset has what it needs."""
    for key, value in flat.items():
        if key.startswith("download.") and key.endswith("sha256") and value and not re.fullmatch(
                r"[0-9a-fA-F]{64}", value):
            raise ParamError(f"{source}: {key} must be empty or 64 hex digits, got {value!r}")
    for dataset, keys, why in _DATASET_NEEDS:
        if flat["dataset"] == dataset and not any(flat[key] for key in keys):
            raise ParamError(
                f"{source}: dataset {dataset} needs {' or '.join(keys)} ({why})")
    if flat["download.folder.val_fraction"] + flat["download.folder.test_fraction"] >= 1:
        raise ParamError(
            f"{source}: download.folder.val_fraction + download.folder.test_fraction must be < 1")


def _check_features(flat: dict[str, Any], source: str) -> None:
    """Encoder x weights, the smallest input each trunk accepts, worker count."""
    encoder, weights, size = flat["encoder"], flat["features.weights"], flat["features.image_size"]
    if weights == "imagenet_v2" and encoder not in IMAGENET_V2_ENCODERS:
        raise ParamError(f"{source}: features.weights: encoder {encoder} has no imagenet_v2 "
                         f"weights (only {', '.join(IMAGENET_V2_ENCODERS)}); use imagenet")
    smallest = 75 if encoder == "inception_v3" else 32
    if 0 < size < smallest:
        raise ParamError(f"{source}: features.image_size {size} is too small for {encoder} "
                         f"(at least {smallest}; 0 = the encoder's native size)")
    if flat["features.num_workers"] < -1:
        raise ParamError(f"{source}: features.num_workers must be >= -1 (-1 = auto), "
                         f"got {flat['features.num_workers']}")


def _check_beams(beams: list, source: str) -> None:
    if not beams or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in beams):
        raise ParamError(f"{source}: eval.beams must be a non-empty list of beam sizes >= 1, "
                         f"got {beams!r}")
    if len(set(beams)) != len(beams):
        raise ParamError(f"{source}: eval.beams lists a beam size twice: {beams!r}")


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
