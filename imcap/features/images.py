"""Images → encoder input: decoding (CPU with PIL, `imcap.features.image_files`, or GPU with
nvJPEG), resize/crop and normalisation as `imcap.features.preprocessing.Preprocessing` says.

Resize and crop are one step: the crop box is computed in the source image and only that region
is resized (`resized_crop`). That equals "resize the shorter side to `resize_size`, centre-crop
`crop_size`" (torchvision's `ImageClassification`) up to a pixel of rounding, resizes fewer
pixels, and cannot blow up on an extreme aspect ratio (a 1×10000 px image).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from imcap.features.image_files import load_rgb, to_rgb
from imcap.features.preprocessing import Preprocessing, crop_box, preprocessing

JPEG_MAGIC = b"\xff\xd8\xff"


def resize_crop(image: torch.Tensor, spec: Preprocessing) -> torch.Tensor:
    """[3, H, W] (uint8 or float, any device) -> [3, S, S] of the same dtype, S = crop size."""
    top, left, height, width = crop_box(*image.shape[-2:], spec)
    size = [spec.crop_size, spec.crop_size]
    return F.resized_crop(image, top, left, height, width, size,
                          interpolation=InterpolationMode(spec.interpolation), antialias=True)


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
                           interpolation=InterpolationMode(spec.interpolation), antialias=True)
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
