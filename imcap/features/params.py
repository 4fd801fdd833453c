"""The encoder choices (`encoder`, `features.weights`), the `features` section of
`params.yaml` (defaults there) and what the `features` stage reads.

Names and sizes only (plus torchvision's weights registry, asked which weights each encoder
has), so that the training and evaluation stages validate `encoder` without depending on the
code that builds it.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Annotated, Any, Self

from pydantic import ConfigDict, Field, model_validator

from imcap.devices import DEVICES
from imcap.params_base import (
    MAX_BATCH,
    MAX_PIXELS,
    MAX_PROCESSES,
    Pixels,
    Processes,
    Section,
    choice,
)

if TYPE_CHECKING:
    import torchvision

# The encoders `params.yaml` may name, in the order docs/features.md lists them. Any torchvision
# classifier whose feature map feeds a global average pool `avgpool` fits (`ClassifierTrunk`:
# ResNets, Inception, Swin, ConvNeXt, EfficientNet); a torchvision ViT (`VITS`) gives its patch
# tokens; CLIP's visual towers come from open_clip (`CLIP_MODELS`, the `clip` extra). A
# new encoder needs only its entries here and in the tables below.
ENCODERS: tuple[str, ...] = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "inception_v3",
    "vit_b_16",
    "vit_l_16",
    "swin_t",
    "swin_b",
    "convnext_tiny",
    "convnext_base",
    "efficientnet_v2_s",
    "clip_vit_b_32",
    "clip_vit_b_16",
    "clip_vit_l_14",
)
# `encoder` -> open_clip's model name; these need `pip install -e ".[clip]"`.
CLIP_MODELS = {"clip_vit_b_32": "ViT-B-32", "clip_vit_b_16": "ViT-B-16",
               "clip_vit_l_14": "ViT-L-14"}
CLIP_INSTALL = 'pip install -e ".[clip]"'
# torchvision ViTs: built for the input size (their position embeddings are sized by it).
VITS = ("vit_b_16", "vit_l_16")
# `features.weights` value -> torchvision weights enum member, or open_clip pretrained tag
# (`openai`, CLIP encoders only); "none": random initialisation.
WEIGHTS = {"none": None, "imagenet": "IMAGENET1K_V1", "imagenet_v2": "IMAGENET1K_V2",
           "openai": "openai"}
CLIP_WEIGHTS = ("none", "openai")
# Patch side of the transformers that cut the image into patches: their input must be a multiple
# of it (torchvision's ViT asserts it; a CLIP tower would drop the remainder).
PATCH = {"vit_b_16": 16, "vit_l_16": 16, "clip_vit_b_32": 32, "clip_vit_b_16": 16,
         "clip_vit_l_14": 14}
# The encoder's stages, as the qualified name of each stage's first module, in order: what
# `train.finetune_encoder` counts from the end (imcap.features.split_encoder). A stage is a
# torchvision builder's own block of layers at one resolution (a ViT: one encoder block);
# ConvNeXt's and Swin's later stages begin with their downsampling, EfficientNetV2's last one
# ends with its 1x1 head convolution. CLIP's open_clip towers are not split (none listed).
_RESNET_STAGES = ("layer1", "layer2", "layer3", "layer4")
_HIERARCHICAL_STAGES = ("features.1", "features.2", "features.4", "features.6")
STAGES: dict[str, tuple[str, ...]] = {
    **{name: _RESNET_STAGES for name in ENCODERS if name.startswith(("resnet", "resnext"))},
    "inception_v3": ("Mixed_5b", "Mixed_6a", "Mixed_7a"),
    "vit_b_16": tuple(f"encoder.layers.encoder_layer_{i}" for i in range(12)),
    "vit_l_16": tuple(f"encoder.layers.encoder_layer_{i}" for i in range(24)),
    **{name: _HIERARCHICAL_STAGES for name in ("swin_t", "swin_b", "convnext_tiny",
                                               "convnext_base")},
    "efficientnet_v2_s": tuple(f"features.{i}" for i in range(1, 7)),
}


def check_finetune_stages(name: str, stages: int) -> None:
    """Raise ValueError naming the maximum if encoder `name` has fewer than `stages` stages to
    fine-tune (`train.finetune_encoder`)."""
    _check_name(name)
    if name not in STAGES and stages:
        raise ValueError(f"train.finetune_encoder: encoder {name} cannot be fine-tuned (its "
                         "open_clip tower is not split into stages); set it to 0")
    most = len(STAGES.get(name, ()))
    if stages > most:
        raise ValueError(f"train.finetune_encoder {stages} is more than encoder {name}'s "
                         f"{most} stages; at most {most}")


# Input side the architectures were designed for (and their pretrained weights trained at).
NATIVE_SIZE = {name: {"inception_v3": 299, "efficientnet_v2_s": 384}.get(name, 224)
               for name in ENCODERS}
# Smallest input the trunk accepts (Inception's stem needs 75 px; CNNs and Swin downsample by
# 32; a patch model needs one patch).
MIN_SIZE = {name: 75 if name == "inception_v3" else PATCH.get(name, 32) for name in ENCODERS}


def weights_enum(name: str, weights: str) -> torchvision.models.WeightsEnum | None:
    """torchvision's weights enum member for `features.weights`, None for `none`."""
    _check_name(name)
    if weights not in WEIGHTS:
        raise ValueError(f"unknown encoder weights {weights!r}; valid choices: "
                         f"{', '.join(WEIGHTS)}")
    if name in CLIP_MODELS:
        raise ValueError(f"encoder {name} comes from open_clip, not torchvision")
    if WEIGHTS[weights] is None:
        return None
    import torchvision  # here, not above: `check` refuses a bad param before this import

    enum = torchvision.models.get_model_weights(name)
    if WEIGHTS[weights] not in enum.__members__:
        available = [key for key, member in WEIGHTS.items()
                     if member is None or member in enum.__members__]
        raise ValueError(f"encoder {name} has no {weights} weights "
                         f"({enum.__name__}.{WEIGHTS[weights]}); valid: {', '.join(available)}")
    return enum[WEIGHTS[weights]]


def check_encoder(name: str, weights: str, image_size: int) -> None:
    """Raise ValueError naming what to change if encoder `name` cannot run with `weights` at
    `image_size` (0: native) here, e.g. a CLIP encoder without open_clip installed."""
    _check_name(name)
    if name in CLIP_MODELS:
        if weights not in CLIP_WEIGHTS:
            raise ValueError(f"features.weights: encoder {name} has no {weights} weights; "
                             f"valid: {', '.join(CLIP_WEIGHTS)}")
    else:
        try:
            weights_enum(name, weights)
        except ValueError as err:
            raise ValueError(f"features.weights: {err}") from None
    smallest, patch = MIN_SIZE[name], PATCH.get(name, 1)
    if 0 < image_size < smallest:
        raise ValueError(f"features.image_size {image_size} is too small for {name} (at least "
                         f"{smallest}; 0 = its native {NATIVE_SIZE[name]})")
    if image_size % patch:
        raise ValueError(f"features.image_size {image_size} is not a multiple of {name}'s "
                         f"{patch} px patches (0 = its native {NATIVE_SIZE[name]})")
    if name in CLIP_MODELS and importlib.util.find_spec("open_clip") is None:
        raise ValueError(f"encoder {name} needs open_clip, which is not installed: "
                         f"{CLIP_INSTALL}")


def _check_name(name: str) -> None:
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; valid choices: {', '.join(ENCODERS)}")


def resolved_image_size(image_size: Any, dataset: Any, encoder_input_size: Any) -> Any:
    """`features.image_size: auto`: `shapes.encoder_input_size` for the embedded dataset, else
    0, the encoder's native preprocessing (ResNet 224, Inception 299, as the seed); any other
    value as it is. Also for the params an MLflow run logged (strings)."""
    if image_size != "auto":
        return image_size
    return encoder_input_size if dataset == "shapes" else 0


class FeaturesParams(Section):
    """`0`, `-1` and `auto` choose by device (docs/features.md)."""

    weights: choice(WEIGHTS)  # none = seeded random init; imagenet = IMAGENET1K_V1, _v2 = V2
    # Square input; 0 = the encoder's native preprocessing (224, Inception 299). `auto` in
    # params.yaml is resolved before this model sees it (`FeatureStageParams`).
    image_size: Annotated[int, Field(ge=0, le=MAX_PIXELS)]
    batch_size: Annotated[int, Field(ge=0, le=MAX_BATCH)]  # 0: 256 on a GPU, 32 on CPU
    dtype: choice(("float16", "float32"))  # storage of the grid features
    device: choice(DEVICES)
    num_workers: Annotated[int, Field(ge=-1, le=MAX_PROCESSES)]  # -1: up to 16 on a GPU, 0 on CPU
    decode: choice(("auto", "pil", "nvjpeg"))  # auto: nvjpeg on a GPU, pil on CPU
    precision: choice(("auto", "float32", "bfloat16"))  # auto: bfloat16 on a GPU
    processes: Processes  # > 1: torchrun, one process per GPU


class ShapesInputParams(Section):
    """The one key of the `shapes` section this stage reads (`check` validates the rest)."""

    model_config = ConfigDict(extra="ignore")

    encoder_input_size: Pixels


class FeatureStageParams(Section):
    """What the `features` stage reads (`shapes.encoder_input_size` for `image_size: auto`).
    `dataset` is only compared with `shapes` here; `check` validates it against the registry,
    so that this stage does not depend on the data code's choices."""

    dataset: str
    encoder: choice(ENCODERS)
    shapes: ShapesInputParams
    features: FeaturesParams

    @model_validator(mode="before")
    @classmethod
    def _resolve_auto_image_size(cls, raw: Any) -> Any:
        features = raw.get("features") if isinstance(raw, dict) else None
        if isinstance(features, dict):
            shapes = raw.get("shapes")
            size = resolved_image_size(features.get("image_size"), raw.get("dataset"),
                                       shapes.get("encoder_input_size")
                                       if isinstance(shapes, dict) else None)
            raw = {**raw, "features": {**features, "image_size": size}}
        return raw

    @model_validator(mode="after")
    def _encoder_supports_features(self) -> Self:
        check_encoder(self.encoder, self.features.weights, self.features.image_size)
        return self
