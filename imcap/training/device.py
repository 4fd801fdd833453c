"""Where and how training runs: ranks (torchrun), device, CPU threads, precision, determinism.

Several processes: `train.processes: N` relaunches the stage under torchrun on this host, or
start it yourself, on one machine or several (the same command on every node):

    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d \\
        --rdzv-endpoint HOST:29400 --rdzv-id imcap -m stages.train

Each rank takes a share of every batch (`imcap.training.batches`); NCCL joins the ranks on
GPUs, gloo on CPU. Only rank 0 reads and writes files (the resume state, checkpoints), validates
and logs metrics; what every rank must agree on (the resume state, the progress after each
epoch, hence when to stop) it sends to the others.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from imcap.devices import pick_device
from imcap.distributed import Shard

CUBLAS_WORKSPACE = "CUBLAS_WORKSPACE_CONFIG"


def training_device(name: str, shard: Shard) -> torch.device:
    """The device `name` picks; on CUDA with several ranks, this rank's GPU on its node."""
    device = pick_device(name, "train.device", report=True)
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
def cpu_threads(count: int) -> Iterator[None]:
    """torch's intra-op CPU threads inside the block: `count` (0: as many as torch picks, one
    per core); restored after. On the CPU, the gradient sums that parallel kernels split between
    threads (the captions' gradients added into their image's, LayerNorm's weights) come out in
    another order, so another rounding, with another thread count: training reproduces exactly
    only at a fixed count."""
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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
