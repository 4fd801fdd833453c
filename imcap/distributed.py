"""Processes working together under torchrun: this process's rank, the process group, what the
ranks send each other, and relaunching a stage under torchrun. Feature extraction
(`imcap.features.sharding`) and training (`imcap.training`) both build on this module, so
neither stage depends on the other's code.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """This process's place among the processes of one job (torchrun's environment): `rank`
    and `world_size` count every process on every node; `local_rank` and `local_world_size`
    those on this node only (its GPUs and CPUs are shared among them, not among all ranks)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @classmethod
    def from_env(cls) -> Shard:
        env = os.environ
        world_size = int(env.get("WORLD_SIZE", 1))
        return cls(int(env.get("RANK", 0)), world_size, int(env.get("LOCAL_RANK", 0)),
                   int(env.get("LOCAL_WORLD_SIZE", world_size)))

    def bounds(self, n: int) -> tuple[int, int]:
        """[start, stop) of this rank's share of `n` items: contiguous, sizes differ by ≤ 1."""
        return n * self.rank // self.world_size, n * (self.rank + 1) // self.world_size


@contextmanager
def process_group(shard: Shard, device: torch.device | None = None) -> Iterator[None]:
    """A process group while several ranks run: NCCL when `device` is a GPU, else gloo."""
    if shard.world_size == 1 or dist.is_initialized():
        yield
        return
    backend = "nccl" if device is not None and device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=shard.rank, world_size=shard.world_size)
    try:
        yield
    finally:
        dist.destroy_process_group()


def broadcast_from_leader(value: T, shard: Shard) -> T:
    """Rank 0's `value` on every rank (any picklable object; every rank calls it)."""
    if shard.world_size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_weights(model: torch.nn.Module, shard: Shard) -> None:
    """Rank 0's weights (parameters and buffers) in `model` on every rank, in place."""
    if shard.world_size == 1:
        return
    for tensor in model.state_dict().values():
        dist.broadcast(tensor, src=0)


def gather_to_leader(value: Any, shard: Shard) -> list[Any] | None:
    """Every rank's `value`, in rank order, on rank 0; None on the others."""
    if shard.world_size == 1:
        return [value]
    values = [None] * shard.world_size if shard.rank == 0 else None
    dist.gather_object(value, values, dst=0)
    return values


def all_ranks(value: Any, shard: Shard) -> list[Any]:
    """Every rank's `value`, in rank order, on every rank."""
    if shard.world_size == 1:
        return [value]
    values: list[Any] = [None] * shard.world_size
    dist.all_gather_object(values, value)
    return values


def launch(processes: int, module: str) -> None:
    """Run `python -m module` in `processes` processes under torchrun (this host only)."""
    from torch.distributed.run import main as torchrun

    torchrun(["--standalone", f"--nproc-per-node={processes}", "--module", module])
