"""How an image becomes an encoder's input: the resize, the crop and the normalisation of each
encoder and weights (`preprocessing`), and the source region the crop keeps (`crop_box`).

Plain values only, so that code which only needs to know what the encoder saw (the evaluate
stage's attention figures) does not import torchvision (about 2 s at every start of evaluate);
torchvision is asked only for pretrained weights' metadata.
"""

from __future__ import annotations

from dataclasses import dataclass

from imcap.features.clip import clip_preprocess_cfg
from imcap.features.params import CLIP_MODELS, NATIVE_SIZE, WEIGHTS, check_encoder, weights_enum

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the encoder's input.

    With pretrained weights every value comes from the weights' own metadata
    (`weights.transforms()`): the image is resized so its shorter side is `resize_size`, then
    centre-cropped to `crop_size`. Without weights there is no metadata: the whole image is
    squashed to `crop_size` × `crop_size` (`resize_size` None, nothing cropped away) and
    normalised with the ImageNet statistics. `interpolation` is a value of torchvision's
    `InterpolationMode` ("bilinear", "bicubic", …).
    """

    crop_size: int
    resize_size: int | None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"


def preprocessing(name: str, weights: str, image_size: int = 0) -> Preprocessing:
    """The preprocessing of encoder `name` with `weights` at `image_size` (0: native size).

    With pretrained weights a non-zero `image_size` replaces the crop size and scales the resize
    size in the weights' ratio (256/224 for IMAGENET1K_V1 ResNets), so `image_size` equal to
    the native size reproduces `weights.transforms()` exactly (CLIP: open_clip's preprocessing,
    shorter side resized to the crop size).
    """
    check_encoder(name, weights, image_size)
    if WEIGHTS[weights] is None:
        return Preprocessing(crop_size=image_size or NATIVE_SIZE[name], resize_size=None)
    if name in CLIP_MODELS:
        cfg = clip_preprocess_cfg(name, WEIGHTS[weights])
        if cfg["resize_mode"] != "shortest":
            raise ValueError(f"{name} {weights}: open_clip resize_mode {cfg['resize_mode']!r} "
                             "is not supported (only 'shortest')")
        size = image_size or cfg["size"]
        return Preprocessing(crop_size=size, resize_size=size, mean=tuple(cfg["mean"]),
                             std=tuple(cfg["std"]), interpolation=str(cfg["interpolation"]))
    meta = weights_enum(name, weights).transforms()
    crop, resize = meta.crop_size[0], meta.resize_size[0]
    if image_size:
        crop, resize = image_size, round(image_size * resize / crop)
    return Preprocessing(crop_size=crop, resize_size=resize, mean=tuple(meta.mean),
                         std=tuple(meta.std), interpolation=meta.interpolation.value)


def crop_box(height: int, width: int, spec: Preprocessing) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the source region that becomes the encoder input."""
    if spec.resize_size is None:  # no metadata: the whole image, squashed
        return 0, 0, height, width
    side = min(height, width) * spec.crop_size / spec.resize_size
    box_h, box_w = min(height, max(1, round(side))), min(width, max(1, round(side)))
    return (height - box_h) // 2, (width - box_w) // 2, box_h, box_w
