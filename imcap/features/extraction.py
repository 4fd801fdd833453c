"""Feature extraction: image files -> encoder -> HDF5 store (layout: `imcap.features.store`).

One code path for CPU and GPU; what differs is resolved from the device (`Runtime`):
- CPU: PIL decodes in the main process (worker processes on request: on a small machine they
  compete with the convolutions for the same cores), float32, batches of 32.
- GPU: DataLoader worker processes read the files ahead, nvJPEG decodes the JPEGs on the GPU
  (other formats are decoded by PIL in the workers), pinned memory and non-blocking copies,
  bf16 autocast, batches of 256; a writer thread checks and stores each batch while the main
  thread decodes and launches the next.
- Both: channels_last memory format (oneDNN and cuDNN convolutions are faster in it: 20-30 %
  on CPU, measured).
- Several GPUs: under torchrun each rank encodes a contiguous slice into a shard; rank 0 merges
  the shards (`imcap.features.sharding`).

A non-finite value (a float16 overflow, a diverging random trunk) fails extraction naming the
image: it must never reach the store, where DVC would cache it as good. An unreadable image
fails naming the file.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from imcap.atomic import atomic_path
from imcap.devices import pick_device
from imcap.features.encoders import Encoder, Preprocessing, build_encoder, preprocessing
from imcap.features.images import (
    ImageReadError,
    gpu_decode,
    is_jpeg,
    normalise,
    read_pixels,
)
from imcap.features.sharding import Shard, gather_errors
from imcap.features.store import create_store, merge_shards

GPU_BATCH, CPU_BATCH = 256, 32
MAX_WORKERS = 16


class NonFiniteFeatureError(RuntimeError):
    """The encoder produced inf/nan for an image; the message names it."""


class ShardFailedError(RuntimeError):
    """Another extraction rank failed; its message is included."""


@dataclass(frozen=True)
class Runtime:
    """How extraction runs, resolved from the `features` params and the device."""

    device: torch.device
    batch_size: int
    num_workers: int
    nvjpeg: bool
    bfloat16: bool

    @classmethod
    def resolve(cls, device: str = "auto", batch_size: int = 0, num_workers: int = -1,
                decode: str = "auto", precision: str = "auto", shard: Shard | None = None
                ) -> Runtime:
        """0 / -1 / `auto` pick the device's defaults (see the module docstring)."""
        shard = shard or Shard()
        dev = pick_device(device)
        cuda = dev.type == "cuda"
        if cuda:
            dev = torch.device("cuda", shard.local_rank)
        if decode == "nvjpeg" and not cuda:
            raise ValueError("features.decode: nvjpeg decodes on the GPU and needs a CUDA "
                             "device; use decode: pil (or auto) on CPU")
        usable = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                  else os.cpu_count() or 1)
        cpus = max(1, usable // shard.world_size)
        if num_workers < 0:
            num_workers = min(MAX_WORKERS, max(1, cpus - 1)) if cuda else 0
        return cls(
            device=dev,
            batch_size=batch_size or (GPU_BATCH if cuda else CPU_BATCH),
            num_workers=num_workers,
            nvjpeg=decode == "nvjpeg" or (decode == "auto" and cuda),
            bfloat16=precision == "bfloat16" or (precision == "auto" and cuda),
        )


def extract_features(
    images_dir: Path,
    filenames: Sequence[str],
    out_path: Path,
    encoder_name: str,
    weights: str,
    image_size: int,
    batch_size: int = 0,
    dtype: str = "float16",
    device: str = "auto",
    num_workers: int = -1,
    decode: str = "auto",
    precision: str = "auto",
    shard: Shard | None = None,
) -> None:
    """Encode every image into the store `out_path` (written atomically).

    `image_size` 0 is the encoder's native size; `batch_size` 0, `num_workers` -1 and the
    `auto`s choose by device. Under torchrun (`shard` from `Shard.from_env()`, a process group
    initialised) this rank encodes its slice and rank 0 merges the slices.
    """
    shard = shard or Shard()
    runtime = Runtime.resolve(device, batch_size, num_workers, decode, precision, shard)
    spec = preprocessing(encoder_name, weights, image_size)
    encoder = build_encoder(encoder_name, weights)
    attrs = {"encoder": encoder_name, "weights": weights, "image_size": spec.crop_size,
             "resize_size": spec.resize_size or 0, "mean": spec.mean, "std": spec.std,
             "interpolation": spec.interpolation.value,
             "precision": "bfloat16" if runtime.bfloat16 else "float32"}
    paths = [Path(images_dir) / name for name in filenames]
    job = Extraction(encoder, spec, runtime, np.dtype(dtype), attrs)
    if shard.world_size == 1:
        with atomic_path(out_path) as tmp:
            job.run(paths, list(filenames), tmp, progress=True)
        _remove_shards(Path(out_path))  # left by an interrupted sharded run
    else:
        _extract_shard(job, paths, list(filenames), Path(out_path), shard)


def _extract_shard(job: Extraction, paths: list[Path], names: list[str], out: Path,
                   shard: Shard) -> None:
    start, stop = shard.bounds(len(names))
    failure: Exception | None = None
    try:
        with atomic_path(shard.path(out)) as tmp:
            job.run(paths[start:stop], names[start:stop], tmp, progress=shard.rank == 0)
    except Exception as err:  # every rank must reach the collective below, then it is raised
        failure = err
    errors = gather_errors(None if failure is None else f"{type(failure).__name__}: {failure}")
    try:
        if failure is not None:
            raise failure
        failed = [(rank, error) for rank, error in enumerate(errors) if error]
        if failed:
            rank, error = failed[0]
            raise ShardFailedError(f"feature extraction failed on rank {rank}: {error}")
        if shard.rank == 0:
            with atomic_path(out) as tmp, h5py.File(tmp, "w") as h5:
                merge_shards([shard.path(out, rank) for rank in range(shard.world_size)], h5)
    finally:
        if shard.rank == 0:  # every rank is past writing its shard (the collective above)
            _remove_shards(out)


def _remove_shards(out: Path) -> None:
    for stale in out.parent.glob(f".{out.name}.shard-*"):
        stale.unlink(missing_ok=True)


class Batch(NamedTuple):
    """A batch from the DataLoader: images decoded on CPU, and raw JPEGs for nvJPEG.

    The JPEG files travel as one concatenated tensor: a worker passes every tensor through its
    own shared-memory file, and 256 per batch would exhaust the open-file limit.
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


@dataclass
class _Encoded:
    """One batch's results on their way to the host (valid once `ready` has completed)."""

    indices: np.ndarray
    grid: torch.Tensor
    pooled: torch.Tensor
    finite: torch.Tensor
    ready: torch.cuda.Event | None


class _Writer:
    """Checks and writes encoded batches in a background thread, so the main thread keeps
    decoding and feeding the GPU meanwhile (h5py releases the GIL while it writes; on a GPU the
    store takes ≈ 200 MB/s per 1,000 img/s)."""

    def __init__(self, grid: h5py.Dataset, pooled: h5py.Dataset, names: list[str]) -> None:
        self.grid, self.pooled, self.names = grid, pooled, names
        self.queue: queue.Queue[_Encoded | None] = queue.Queue(maxsize=2)
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self._loop, name="feature-writer", daemon=True)
        self.thread.start()

    def put(self, encoded: _Encoded) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(encoded)

    def finish(self) -> None:
        """Wait until everything is written; raise the first error."""
        self.stop()
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()

    def _loop(self) -> None:
        while (encoded := self.queue.get()) is not None:
            if self.error is None:  # after an error, only drain the queue
                try:
                    self._write(encoded)
                except Exception as err:  # raised in the main thread by put() / finish()
                    self.error = err

    def _write(self, encoded: _Encoded) -> None:
        if encoded.ready is not None:
            encoded.ready.synchronize()
        finite = encoded.finite.numpy()
        if not finite.all():
            bad = [self.names[i] for i in encoded.indices[~finite]]
            raise NonFiniteFeatureError(
                f"non-finite features (inf/nan) for {len(bad)} image(s), first: "
                f"{', '.join(bad[:5])}. A float16 store overflows on large activations (e.g. "
                "random-weight deep ResNets): set features.dtype=float32, or use pretrained "
                "weights.")
        start, stop = int(encoded.indices[0]), int(encoded.indices[-1]) + 1
        self.grid[start:stop] = encoded.grid.numpy()
        self.pooled[start:stop] = encoded.pooled.numpy()


@dataclass
class Extraction:
    """Encoding a list of image files into a new store with a built encoder."""

    encoder: Encoder
    spec: Preprocessing
    runtime: Runtime
    dtype: np.dtype
    attrs: dict

    def run(self, paths: list[Path], names: list[str], out: Path, progress: bool) -> None:
        """Encode `paths` into a new store at `out`."""
        rt = self.runtime
        if rt.device.type == "cuda":
            torch.cuda.set_device(rt.device)
            torch.backends.cudnn.benchmark = True
        encoder = self.encoder.to(rt.device, memory_format=torch.channels_last)
        loader = DataLoader(
            ImageFiles(paths, self.spec, raw_jpeg=rt.nvjpeg),
            batch_size=rt.batch_size,
            num_workers=rt.num_workers,
            collate_fn=collate,
            pin_memory=rt.device.type == "cuda",
        )
        bar = tqdm(loader, desc=f"features {self.attrs['encoder']}", unit="batch",
                   disable=not progress)
        writer: _Writer | None = None
        with h5py.File(out, "w") as h5, torch.inference_mode():
            try:
                for batch in bar:
                    grid, pooled = self._encode(encoder, self._input(batch, paths))
                    if writer is None:
                        writer = _Writer(*create_store(h5, names, *grid.shape[1:], self.dtype,
                                                       self.attrs), names)
                    writer.put(self._to_host(batch, grid, pooled))
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

    def _input(self, batch: Batch, paths: list[Path]) -> torch.Tensor:
        """The batch on the device, decoded, normalised, channels_last."""
        if batch.errors:
            raise ImageReadError(batch.errors[0])
        dev = self.runtime.device
        if not len(batch.jpeg_slots):
            pixels = batch.pixels.to(dev, non_blocking=True)
        else:
            size = self.spec.crop_size
            pixels = torch.empty(len(batch.indices), 3, size, size, device=dev)
            if len(batch.pixel_slots):
                pixels[batch.pixel_slots.to(dev)] = batch.pixels.to(dev).float()
            jpeg_paths = [paths[int(batch.indices[s])] for s in batch.jpeg_slots]
            pixels[batch.jpeg_slots.to(dev)] = gpu_decode(batch.jpegs(), jpeg_paths,
                                                          self.spec, dev)
        return normalise(pixels, self.spec).contiguous(memory_format=torch.channels_last)

    def _encode(self, encoder: Encoder, images: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(grid in the storage dtype, pooled float32), on the device."""
        with torch.autocast(images.device.type, torch.bfloat16, enabled=self.runtime.bfloat16):
            grid, pooled = encoder(images)
        return grid.to(getattr(torch, self.dtype.name)), pooled.float()

    def _to_host(self, batch: Batch, grid: torch.Tensor, pooled: torch.Tensor) -> _Encoded:
        # inf/nan after the cast to the storage dtype: a float16 overflow shows up here.
        finite = torch.isfinite(grid).flatten(1).all(1) & torch.isfinite(pooled).all(1)
        ready = None
        if grid.device.type == "cuda":  # copies into pinned memory, overlapping later work
            grid, pooled, finite = (t.to("cpu", non_blocking=True) for t in (grid, pooled,
                                                                              finite))
            ready = torch.cuda.Event()
            ready.record()
        return _Encoded(batch.indices.numpy(), grid, pooled, finite, ready)
