"""Image files in batches: the Dataset the DataLoader workers read, and how items become a batch.

On a GPU with nvJPEG, JPEG files travel undecoded (the GPU decodes them); everything else is
decoded by PIL in the worker, so one batch can hold both.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset

from imcap.features.extraction_settings import ExtractionSettings
from imcap.features.image_files import ImageReadError
from imcap.features.images import gpu_decode, is_jpeg, read_pixels
from imcap.features.preprocessing import Preprocessing


class Batch(NamedTuple):
    """A batch from the DataLoader: images decoded on CPU, and raw JPEGs for nvJPEG.

    The JPEG files travel as one concatenated tensor: a worker passes every tensor through its
    own shared-memory file, and 256 per batch would exhaust the open-file limit. On a GPU the
    DataLoader pins every tensor of the batch, so that all of them, the slots included, go to
    the device without blocking.
    """

    indices: torch.Tensor  # [B] positions in the image list, consecutive
    pixels: torch.Tensor  # [P, 3, S, S] uint8, decoded by PIL
    pixel_slots: torch.Tensor  # [P] their positions in the batch
    jpeg_bytes: torch.Tensor  # the JPEG files, concatenated, uint8
    jpeg_sizes: torch.Tensor  # [B - P] their lengths in bytes
    jpeg_slots: torch.Tensor  # [B - P] their positions in the batch
    errors: list[str]  # ImageReadError messages of unreadable files

    def jpegs(self) -> list[torch.Tensor]:
        return list(self.jpeg_bytes.split(self.jpeg_sizes.tolist()))


class ImageFiles(Dataset):
    """Item i: (i, uint8 [3, S, S] decoded by PIL), or with `raw_jpeg` the bytes of a JPEG
    file (decoded later on the GPU); other formats are always decoded here.

    An unreadable file gives (i, its error message), raised by the main process: an exception
    raised inside a worker makes the DataLoader's shutdown wait 5 s per worker (torch 2.14).
    """

    def __init__(self, paths: Sequence[Path], spec: Preprocessing, raw_jpeg: bool) -> None:
        self.paths, self.spec, self.raw_jpeg = list(paths), spec, raw_jpeg

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | str]:
        try:
            return index, self._read(self.paths[index])
        except ImageReadError as err:
            return index, str(err)

    def _read(self, path: Path) -> torch.Tensor:
        if not self.raw_jpeg:
            return read_pixels(path, self.spec)
        try:
            data = path.read_bytes()
        except OSError as err:
            raise ImageReadError(f"{path}: cannot read image ({err})") from err
        if is_jpeg(data):
            return torch.frombuffer(bytearray(data), dtype=torch.uint8)
        return read_pixels(path, self.spec, data)


def collate(items: list[tuple[int, torch.Tensor | str]]) -> Batch:
    errors = [t for _, t in items if isinstance(t, str)]
    good = [(i, t) for i, t in items if not isinstance(t, str)]
    decoded = [slot for slot, (_, t) in enumerate(good) if t.dim() == 3]
    raw = [slot for slot, (_, t) in enumerate(good) if t.dim() == 1]
    return Batch(
        indices=torch.tensor([index for index, _ in good], dtype=torch.long),
        pixels=(torch.stack([good[s][1] for s in decoded]) if decoded
                else torch.empty(0, dtype=torch.uint8)),
        pixel_slots=torch.tensor(decoded, dtype=torch.long),
        jpeg_bytes=(torch.cat([good[s][1] for s in raw]) if raw
                    else torch.empty(0, dtype=torch.uint8)),
        jpeg_sizes=torch.tensor([len(good[s][1]) for s in raw], dtype=torch.long),
        jpeg_slots=torch.tensor(raw, dtype=torch.long),
        errors=errors,
    )


def image_batches(paths: Sequence[Path], spec: Preprocessing,
                  runtime: ExtractionSettings) -> DataLoader:
    """The images in order, in batches of `runtime.batch_size`, read by its workers."""
    return DataLoader(
        ImageFiles(paths, spec, raw_jpeg=runtime.nvjpeg),
        batch_size=runtime.batch_size,
        num_workers=runtime.num_workers,
        collate_fn=collate,
        pin_memory=runtime.device.type == "cuda",
    )


def batch_pixels(batch: Batch, paths: Sequence[Path], spec: Preprocessing,
                 device: torch.device) -> torch.Tensor:
    """The batch's pixel values [B, 3, S, S] on `device`, every image decoded (what every
    encoder input is made of: the features stage's, a fine-tuned encoder's in training and
    evaluation). An unreadable image raises its `ImageReadError`.

    On a GPU the DataLoader pinned the batch's tensors: every copy here is non-blocking.
    """
    if batch.errors:
        raise ImageReadError(batch.errors[0])
    pixels = batch.pixels.to(device, non_blocking=True)
    if not len(batch.jpeg_slots):
        return pixels
    indices = batch.indices.tolist()
    jpeg_paths = [paths[indices[slot]] for slot in batch.jpeg_slots.tolist()]
    decoded = gpu_decode(batch.jpegs(), jpeg_paths, spec, device)
    if not len(batch.pixel_slots):
        return decoded  # only JPEGs: already in batch order
    merged = torch.empty(len(indices), *decoded.shape[1:], device=device)
    merged.index_copy_(0, batch.pixel_slots.to(device, non_blocking=True), pixels.float())
    return merged.index_copy_(0, batch.jpeg_slots.to(device, non_blocking=True), decoded)
