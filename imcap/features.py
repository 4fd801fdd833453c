"""Feature extraction into an HDF5 store, and reading it back.

Layout of the store (one per encoder):
- `grid`      [N, R, C] float16 (or float32), chunked one image per chunk
- `pooled`    [N, C]    float32
- `filenames` [N]       utf-8, the dataset's image order
- attrs: encoder, weights, image_size
A non-finite value (a float16 overflow, a diverging random trunk) fails extraction naming the
image: it must never reach the store, where DVC would cache it as good.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2
from tqdm import tqdm

from imcap.atomic import atomic_path
from imcap.devices import pick_device
from imcap.encoders import build_encoder

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageReadError(RuntimeError):
    """An image could not be read or decoded; the message names the file."""


class NonFiniteFeatureError(RuntimeError):
    """The encoder produced inf/nan for an image; the message names it."""


def image_transform(image_size: int) -> v2.Compose:
    """Resize to a square `image_size`, scale to [0, 1], normalise with ImageNet statistics."""
    return v2.Compose([
        v2.PILToTensor(),
        v2.Resize((image_size, image_size), antialias=True),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def load_rgb(path: Path) -> Image.Image:
    """Open any PIL-readable image as RGB, or raise `ImageReadError` naming the file."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise ImageReadError(f"{path}: cannot read image ({err})") from err


class ImageFiles(Dataset):
    def __init__(self, paths: Sequence[Path], image_size: int) -> None:
        self.paths = list(paths)
        self.transform = image_transform(image_size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(load_rgb(self.paths[index]))


def extract_features(
    images_dir: Path,
    filenames: Sequence[str],
    out_path: Path,
    encoder_name: str,
    weights: str,
    image_size: int,
    batch_size: int,
    dtype: str = "float16",
    device: str = "auto",
    num_workers: int = 0,
) -> None:
    """Encode every image into `out_path` (written atomically)."""
    dev = pick_device(device)
    encoder = build_encoder(encoder_name, weights).to(dev)
    loader = DataLoader(
        ImageFiles([images_dir / name for name in filenames], image_size),
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=dev.type == "cuda",
    )
    storage = np.dtype(dtype)
    with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as h5:
        grid_ds = pooled_ds = None
        start = 0
        with torch.inference_mode():
            for batch in tqdm(loader, desc=f"features {encoder_name}", unit="batch"):
                grid, pooled = encoder(batch.to(dev, non_blocking=True))
                with np.errstate(over="ignore"):  # overflow -> inf, caught just below
                    grid = grid.float().cpu().numpy().astype(storage)
                pooled = pooled.float().cpu().numpy()
                _check_finite(grid, pooled, filenames[start : start + len(grid)])
                if grid_ds is None:
                    n, (r, c) = len(filenames), grid.shape[1:]
                    grid_ds = h5.create_dataset("grid", (n, r, c), dtype=storage, chunks=(1, r, c))
                    pooled_ds = h5.create_dataset("pooled", (n, c), dtype=np.float32)
                grid_ds[start : start + len(grid)] = grid
                pooled_ds[start : start + len(grid)] = pooled
                start += len(grid)
        h5.create_dataset("filenames", data=list(filenames), dtype=h5py.string_dtype())
        h5.attrs.update(encoder=encoder_name, weights=weights, image_size=image_size)


def _check_finite(grid: np.ndarray, pooled: np.ndarray, names: Sequence[str]) -> None:
    bad = ~(np.isfinite(grid).all(axis=(1, 2)) & np.isfinite(pooled).all(axis=1))
    if bad.any():
        listed = ", ".join(names[i] for i in np.flatnonzero(bad)[:5])
        raise NonFiniteFeatureError(
            f"non-finite features (inf/nan) for {int(bad.sum())} image(s), first: {listed}. "
            "A float16 store overflows on large activations (e.g. random-weight deep ResNets): "
            "set features.dtype=float32, or use pretrained weights."
        )


@dataclass
class FeatureStore:
    """Read access to a feature store written by `extract_features`."""

    path: Path

    def __post_init__(self) -> None:
        with h5py.File(self.path, "r") as h5:
            self.filenames = [name.decode() for name in h5["filenames"][:]]
            self.grid_shape: tuple[int, int] = tuple(h5["grid"].shape[1:])
            self.attrs = dict(h5.attrs)

    @property
    def feature_dim(self) -> int:
        return self.grid_shape[1]

    def load(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Grid and pooled features of the images at `indices` (any order)."""
        order = np.argsort(indices)
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        with h5py.File(self.path, "r") as h5:
            sorted_idx = np.asarray(indices)[order]
            grid = h5["grid"][sorted_idx]
            pooled = h5["pooled"][sorted_idx]
        return grid[inverse], pooled[inverse]
