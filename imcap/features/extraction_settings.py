"""How feature extraction runs on this machine, resolved from the `features` params.

One code path for CPU and GPU; what differs is chosen from the device:
- CPU: PIL decodes in the main process (worker processes on request: on a small machine they
  compete with the convolutions for the same cores), float32, batches of 32.
- GPU: DataLoader worker processes read the files ahead, nvJPEG decodes the JPEGs on the GPU
  (other formats are decoded by PIL in the workers), pinned memory and non-blocking copies,
  bf16 autocast, batches of 256.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from imcap.devices import pick_device
from imcap.distributed import Shard
from imcap.features.params import FeaturesParams

GPU_BATCH, CPU_BATCH = 256, 32
MAX_WORKERS = 16


@dataclass(frozen=True)
class ExtractionSettings:
    """How extraction runs: the device and what its `0` / `-1` / `auto` params resolved to."""

    device: torch.device
    batch_size: int
    num_workers: int
    nvjpeg: bool
    bfloat16: bool

    @classmethod
    def resolve(cls, config: FeaturesParams, shard: Shard | None = None) -> ExtractionSettings:
        """`batch_size` 0, `num_workers` -1 and the `auto`s pick the device's defaults (module
        docstring); under torchrun each rank takes its local GPU and its share of the CPUs."""
        shard = shard or Shard()
        dev = pick_device(config.device, "features.device", report=True)
        cuda = dev.type == "cuda"
        if cuda:
            dev = torch.device("cuda", shard.local_rank)
        if config.decode == "nvjpeg" and not cuda:
            raise ValueError("features.decode: nvjpeg decodes on the GPU and needs a CUDA "
                             "device; use decode: pil (or auto) on CPU")
        usable = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                  else os.cpu_count() or 1)
        cpus = max(1, usable // shard.local_world_size)  # this node's CPUs, its ranks'
        num_workers = config.num_workers
        if num_workers < 0:
            num_workers = min(MAX_WORKERS, max(1, cpus - 1)) if cuda else 0
        return cls(
            device=dev,
            batch_size=config.batch_size or (GPU_BATCH if cuda else CPU_BATCH),
            num_workers=num_workers,
            nvjpeg=config.decode == "nvjpeg" or (config.decode == "auto" and cuda),
            bfloat16=(config.precision == "bfloat16"
                      or (config.precision == "auto" and cuda)),
        )
