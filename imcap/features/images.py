"""Images → encoder input: robust decoding (CPU with PIL, or GPU with nvJPEG), resize/crop and
normalisation as `imcap.features.encoders.Preprocessing` says.

Resize and crop are one step: the crop box is computed in the source image and only that region
is resized (`resized_crop`). That equals "resize the shorter side to `resize_size`, centre-crop
`crop_size`" (torchvision's `ImageClassification`) up to a pixel of rounding, resizes fewer
pixels, and cannot blow up on an extreme aspect ratio (a 1×10000 px image).

Every failure names the file: a corrupt or truncated file, an unknown format, a decoder error.
16-bit greyscale PNGs are scaled to 8 bits (PIL's own conversion saturates them to white);
CMYK, greyscale, palette and alpha images are converted to RGB.
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2 import functional as F

from imcap.features.encoders import Preprocessing, preprocessing

JPEG_MAGIC = b"\xff\xd8\xff"
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


class ImageReadError(RuntimeError):
    """An image could not be read or decoded; the message names the file."""


def load_rgb(path: Path, data: bytes | None = None, max_side: int | None = None
             ) -> Image.Image:
    """Open an image (from `path`, or its bytes `data`) as 8-bit RGB; `ImageReadError` names it.
    With `max_side`, a larger image is decoded reduced (JPEG: by its decoder, PIL's `draft`)
    and shrunk to at most `max_side` px on its longer side, before the conversion to RGB.

    Any decoder failure is caught, not only OSError: PIL raises SyntaxError, ValueError,
    struct.error or DecompressionBombError for some broken files, and the stage must say which.
    """
    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as image:
            if max_side is not None and max(image.size) > max_side:
                image.thumbnail((max_side, max_side))  # JPEG: `draft`s before decoding
            image.load()
            return to_rgb(image)
    except Exception as err:
        raise ImageReadError(f"{path}: cannot read image ({type(err).__name__}: {err})") from err


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB, scaling 16-bit (and 32-bit integer) greyscale instead of saturating it."""
    if image.mode in _SIXTEEN_BIT_MODES or image.mode == "I":
        values = np.asarray(image).astype(np.float32)
        if image.mode in _SIXTEEN_BIT_MODES or values.max(initial=0) > 255:
            values = values / 257
        image = Image.fromarray(values.clip(0, 255).round().astype(np.uint8))
    return image.convert("RGB")


def crop_box(height: int, width: int, spec: Preprocessing) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the source region that becomes the encoder input."""
    if spec.resize_size is None:  # no metadata: the whole image, squashed
        return 0, 0, height, width
    side = min(height, width) * spec.crop_size / spec.resize_size
    box_h, box_w = min(height, max(1, round(side))), min(width, max(1, round(side)))
    return (height - box_h) // 2, (width - box_w) // 2, box_h, box_w


def resize_crop(image: torch.Tensor, spec: Preprocessing) -> torch.Tensor:
    """[3, H, W] (uint8 or float, any device) -> [3, S, S] of the same dtype, S = crop size."""
    top, left, height, width = crop_box(*image.shape[-2:], spec)
    size = [spec.crop_size, spec.crop_size]
    return F.resized_crop(image, top, left, height, width, size,
                          interpolation=spec.interpolation, antialias=True)


def read_pixels(path: Path, spec: Preprocessing, data: bytes | None = None) -> torch.Tensor:
    """Decode with PIL and resize/crop: uint8 [3, S, S]."""
    image = F.pil_to_tensor(load_rgb(path, data))
    return resize_crop(image, spec)


class Normaliser:
    """[B, 3, S, S] pixel values in 0..255 (uint8 or float) -> float32, mean/std normalised.

    The constants are built once, on `device`: built per batch, each would be a blocking copy
    to the GPU.
    """

    def __init__(self, spec: Preprocessing, device: torch.device | None = None) -> None:
        self.mean = torch.tensor(spec.mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(spec.std, dtype=torch.float32, device=device).view(1, 3, 1, 1)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return (batch.float() / 255 - self.mean) / self.std


def is_jpeg(data: bytes | torch.Tensor) -> bool:
    head = data[:3] if isinstance(data, bytes) else bytes(data[:3].tolist())
    return head == JPEG_MAGIC


def gpu_decode(datas: Sequence[torch.Tensor], paths: Sequence[Path], spec: Preprocessing,
               device: torch.device) -> torch.Tensor:
    """Decode JPEG files (their bytes, uint8 CPU tensors) with nvJPEG on `device` and
    resize/crop there: float [B, 3, S, S] in 0..255.

    A batch nvJPEG rejects is decoded image by image; an image it cannot decode (a corrupt
    file, or a JPEG flavour nvJPEG lacks) is decoded by PIL instead, which names a bad file.
    """
    try:
        images = decode_jpeg(list(datas), mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        images = [_decode_one(data, path, device) for data, path in zip(datas, paths,
                                                                         strict=True)]
    return resize_crops(images, spec)


def resize_crops(images: Sequence[torch.Tensor], spec: Preprocessing) -> torch.Tensor:
    """[3, H, W] images of any sizes (uint8 or float, one device) -> float [B, 3, S, S], each
    equal to `resize_crop(image.float(), spec)`.

    One resize per crop-box size, not per image (on a GPU a call costs more in launching than
    in computing): the crops of one size are stacked and resized together.
    """
    boxes = [crop_box(*image.shape[-2:], spec) for image in images]
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, (_, _, height, width) in enumerate(boxes):
        groups[height, width].append(i)
    rows: dict[int, torch.Tensor] = {}
    for members in groups.values():
        crops = torch.stack([_crop(images[i], boxes[i]) for i in members]).float()
        resized = F.resize(crops, [spec.crop_size, spec.crop_size],
                           interpolation=spec.interpolation, antialias=True)
        if len(groups) == 1:
            return resized
        rows.update(zip(members, resized.unbind(), strict=True))
    return torch.stack([rows[i] for i in range(len(images))])


def _crop(image: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
    top, left, height, width = box
    return image[:, top : top + height, left : left + width]


def _decode_one(data: torch.Tensor, path: Path, device: torch.device) -> torch.Tensor:
    try:
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        image = load_rgb(path, data.numpy().tobytes())
        return F.pil_to_tensor(image).to(device)


class ImageTransform:
    """PIL image -> normalised float [3, S, S]: exactly the input `extract_features` gives the
    encoder on CPU (for captioning new images with the encoder of a feature store)."""

    def __init__(self, spec: Preprocessing) -> None:
        self.spec = spec
        self.normalise = Normaliser(spec)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        pixels = resize_crop(F.pil_to_tensor(to_rgb(image)), self.spec)
        return self.normalise(pixels[None])[0]


def image_transform(image_size: int, encoder: str = "resnet18",
                    weights: str = "none") -> ImageTransform:
    """The transform of encoder `encoder` with `weights` at `image_size` (0 = native size)."""
    return ImageTransform(preprocessing(encoder, weights, image_size))
