"""The encoder choices (`encoder`, `features.weights`) and the `features` section of
`params.yaml` (defaults there): how the `features` stage runs.

Names and sizes only (plus torchvision's weights registry, asked which weights each encoder
has), so that every stage validates `encoder` without depending on the code that builds it.
"""

from __future__ import annotations

from typing import Annotated

import torchvision
from pydantic import Field

from imcap.config import NonNegative, Positive, Section, choice

DEVICES = ("auto", "cpu", "cuda")
# The encoders `params.yaml` may name, in the order the README lists them. Any torchvision
# classifier whose feature map feeds a global average pool `avgpool` and then an `fc` head fits
# (`ClassifierTrunk`); a new one needs only its entries here and in the two tables below.
ENCODERS: tuple[str, ...] = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "inception_v3",
)
# `features.weights` value -> torchvision weights enum member ("none": random initialisation).
WEIGHTS = {"none": None, "imagenet": "IMAGENET1K_V1", "imagenet_v2": "IMAGENET1K_V2"}
# Input side the architectures were designed for (and their ImageNet weights trained at).
NATIVE_SIZE = {name: 299 if name == "inception_v3" else 224 for name in ENCODERS}
# Smallest input the trunk accepts (Inception's stem needs 75 px; ResNets downsample by 32).
MIN_SIZE = {name: 75 if name == "inception_v3" else 32 for name in ENCODERS}


def weights_enum(name: str, weights: str) -> torchvision.models.WeightsEnum | None:
    """torchvision's weights enum member for `features.weights`, None for `none`."""
    _check_name(name)
    if weights not in WEIGHTS:
        raise ValueError(f"unknown encoder weights {weights!r}; valid choices: "
                         f"{', '.join(WEIGHTS)}")
    if WEIGHTS[weights] is None:
        return None
    enum = torchvision.models.get_model_weights(name)
    if WEIGHTS[weights] not in enum.__members__:
        available = [key for key, member in WEIGHTS.items()
                     if member is None or member in enum.__members__]
        raise ValueError(f"encoder {name} has no {weights} weights "
                         f"({enum.__name__}.{WEIGHTS[weights]}); valid: {', '.join(available)}")
    return enum[WEIGHTS[weights]]


def _check_name(name: str) -> None:
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; valid choices: {', '.join(ENCODERS)}")


class FeatureParams(Section):
    """`0`, `-1` and `auto` choose by device (README, "Encoders and feature extraction")."""

    weights: choice(WEIGHTS)  # none = seeded random init; imagenet = IMAGENET1K_V1, _v2 = V2
    # Square input; 0 = the encoder's native preprocessing (224, Inception 299). `auto` in
    # params.yaml is resolved before this model sees it (`imcap.params.Params`).
    image_size: NonNegative
    batch_size: NonNegative  # 0: 256 on a GPU, 32 on CPU
    dtype: choice(("float16", "float32"))  # storage of the grid features
    device: choice(DEVICES)
    num_workers: Annotated[int, Field(ge=-1)]  # -1: up to 16 on a GPU, none on CPU
    decode: choice(("auto", "pil", "nvjpeg"))  # auto: nvjpeg on a GPU, pil on CPU
    precision: choice(("auto", "float32", "bfloat16"))  # auto: bfloat16 on a GPU
    processes: Positive  # > 1: torchrun, one process per GPU
