"""Processes working together under torchrun: this process's rank, the process group, and
relaunching a stage under torchrun. Feature extraction (`imcap.features.sharding`) and training
(`imcap.training`) both build on this module, so neither stage depends on the other's code.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist


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


def launch(processes: int, module: str) -> None:
    """Run `python -m module` in `processes` processes under torchrun (this host only)."""
    from torch.distributed.run import main as torchrun

    torchrun(["--standalone", f"--nproc-per-node={processes}", "--module", module])
