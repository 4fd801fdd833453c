"""Where and how training runs: ranks (torchrun), device, precision, determinism.

Several processes: `train.processes: N` relaunches the stage under torchrun on this host, or
start it yourself, on one machine or several (the same command on every node):

    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d \\
        --rdzv-endpoint HOST:29400 --rdzv-id imcap -m stages.train

Each rank takes a share of every batch (`imcap.training.batches`); NCCL joins the ranks on
GPUs, gloo on CPU. Only rank 0 logs metrics, writes checkpoints and the resume state.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist

from imcap.devices import pick_device
from imcap.features.sharding import Shard

CUBLAS_WORKSPACE = "CUBLAS_WORKSPACE_CONFIG"


def training_device(name: str, shard: Shard) -> torch.device:
    """The device `name` picks; on CUDA with several ranks, this rank's GPU on its node."""
    device = pick_device(name)
    if device.type == "cuda" and shard.world_size > 1:
        torch.cuda.set_device(shard.local_rank)
        return torch.device("cuda", shard.local_rank)
    return device


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype:
    """`auto`: bfloat16 autocast on CUDA, float32 elsewhere."""
    if precision == "bfloat16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return torch.float32


@contextmanager
def process_group(shard: Shard, device: torch.device) -> Iterator[None]:
    """NCCL (CUDA) or gloo (CPU) process group while several ranks train."""
    if shard.world_size == 1 or dist.is_initialized():
        yield
        return
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=shard.rank,
                            world_size=shard.world_size)
    try:
        yield
    finally:
        dist.destroy_process_group()


@contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """Deterministic kernels (and the cuBLAS workspace they need) inside the block only, when
    `enabled`; what was set before is restored after."""
    if not enabled:
        yield
        return
    before = (torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled(),
              os.environ.get(CUBLAS_WORKSPACE))
    os.environ.setdefault(CUBLAS_WORKSPACE, ":4096:8")
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        if before[2] is None:
            os.environ.pop(CUBLAS_WORKSPACE, None)
        else:
            os.environ[CUBLAS_WORKSPACE] = before[2]
