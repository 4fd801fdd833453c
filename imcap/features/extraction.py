"""Feature extraction: image files -> encoder -> HDF5 store (layout: `imcap.features.store`).

The main thread reads batches (`imcap.features.loader`), decodes what is left to decode on the
device, normalises and encodes; a writer thread checks and stores each batch meanwhile
(`imcap.features.writer`). How that runs on this machine (batch size, workers, nvJPEG, bf16) is
resolved from the device (`imcap.features.extraction_settings`). Both CPU and GPU use the
channels_last memory format (oneDNN and cuDNN convolutions are faster in it: 20-30 % on CPU,
measured). Several GPUs: under torchrun each rank encodes a contiguous slice into a shard;
rank 0 merges the shards (`imcap.features.sharding`).

An unreadable image fails extraction naming the file; so does a non-finite feature.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from imcap.atomic import atomic_path
from imcap.distributed import Shard
from imcap.features.encoders import Encoder, build_encoder
from imcap.features.extraction_settings import ExtractionSettings
from imcap.features.images import Normaliser
from imcap.features.loader import batch_pixels, image_batches
from imcap.features.params import FeaturesParams
from imcap.features.preprocessing import Preprocessing, preprocessing
from imcap.features.sharding import extract_shard, remove_shards
from imcap.features.store import create_store
from imcap.features.writer import EncodedBatch, FeatureWriter
from imcap.progress import progress_bar


def extract_features(images_dir: Path, filenames: Sequence[str], out_path: Path,
                     encoder_name: str, config: FeaturesParams, shard: Shard | None = None
                     ) -> None:
    """Encode every image with encoder `encoder_name` into the store `out_path` (written
    atomically), as `config` (the `features` params) says.

    Under torchrun (`shard` from `Shard.from_env()`, a process group initialised) this rank
    encodes its slice and rank 0 merges the slices.
    """
    shard = shard or Shard()
    runtime = ExtractionSettings.resolve(config, shard)
    spec = preprocessing(encoder_name, config.weights, config.image_size)
    encoder = build_encoder(encoder_name, config.weights, spec.crop_size)
    attrs = {"encoder": encoder_name, "weights": config.weights, "image_size": spec.crop_size,
             "resize_size": spec.resize_size or 0, "mean": spec.mean, "std": spec.std,
             "interpolation": spec.interpolation,
             "precision": "bfloat16" if runtime.bfloat16 else "float32"}
    paths = [Path(images_dir) / name for name in filenames]
    job = Extraction(encoder, spec, runtime, np.dtype(config.dtype), attrs)
    if shard.world_size == 1:
        with atomic_path(out_path) as tmp:
            job.run(paths, list(filenames), tmp, progress=True)
        remove_shards(Path(out_path))  # left by an interrupted sharded run
    else:
        extract_shard(job, paths, list(filenames), Path(out_path), shard)


@dataclass
class Extraction:
    """Encoding a list of image files into a new store with a built encoder."""

    encoder: Encoder
    spec: Preprocessing
    runtime: ExtractionSettings
    dtype: np.dtype
    attrs: dict

    def run(self, paths: list[Path], names: list[str], out: Path, progress: bool) -> None:
        """Encode `paths` into rows 0.. of a new store at `out` with a row per name of `names`.

        `names` may go on past `paths` (rank 0 of a sharded run: the other ranks' rows are
        left unwritten here, and copied in by `imcap.features.sharding`).
        """
        rt = self.runtime
        if rt.device.type == "cuda":
            torch.cuda.set_device(rt.device)
            torch.backends.cudnn.benchmark = True
        encoder = self.encoder.to(rt.device, memory_format=torch.channels_last)
        normalise = Normaliser(self.spec, rt.device)
        bar = progress_bar(image_batches(paths, self.spec, rt),
                           desc=f"features {self.attrs['encoder']}", unit="batch",
                           disable=not progress)
        writer: FeatureWriter | None = None
        with h5py.File(out, "w") as h5, torch.inference_mode():
            try:
                for batch in bar:
                    grid, pooled = self._encode(encoder, normalise(
                        batch_pixels(batch, paths, self.spec, rt.device)))
                    if writer is None:
                        writer = FeatureWriter(*create_store(h5, names, *grid.shape[1:],
                                                             self.dtype, self.attrs), names)
                    writer.put(EncodedBatch.to_host(batch.indices.numpy(), grid, pooled))
                if writer is not None:
                    writer.finish()
                else:  # no images (a shard of an empty slice): shapes from a dummy input
                    size = self.spec.crop_size
                    grid, _ = self._encode(encoder, torch.zeros(1, 3, size, size,
                                                                device=rt.device))
                    create_store(h5, names, *grid.shape[1:], self.dtype, self.attrs)
            finally:
                if writer is not None:
                    writer.stop()

    def _encode(self, encoder: Encoder, images: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(grid in the storage dtype, pooled float32) of normalised `images`, on the device."""
        images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(images.device.type, torch.bfloat16, enabled=self.runtime.bfloat16):
            grid, pooled = encoder(images)
        return grid.to(getattr(torch, self.dtype.name)), pooled.float()
