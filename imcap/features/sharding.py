"""Feature extraction across several processes (one per GPU), started by torchrun.

Each rank encodes a contiguous slice of the images into its own shard file; the ranks then
exchange their outcome (a collective, so a failed rank cannot leave the others waiting) and
rank 0 concatenates the shards into the final store, atomically.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch.distributed as dist


@dataclass(frozen=True)
class Shard:
    """This process's place among the extraction processes (torchrun's environment)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Shard:
        env = os.environ
        return cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)),
                   int(env.get("LOCAL_RANK", 0)))

    def bounds(self, n: int) -> tuple[int, int]:
        """[start, stop) of this rank's images among `n`: contiguous, sizes differ by ≤ 1."""
        return n * self.rank // self.world_size, n * (self.rank + 1) // self.world_size

    def path(self, out: Path, rank: int | None = None) -> Path:
        """Shard file of `rank` (default: this one), hidden beside the final store."""
        rank = self.rank if rank is None else rank
        return out.parent / f".{out.name}.shard-{rank}-of-{self.world_size}"


def gather_errors(error: str | None) -> list[str | None]:
    """Every rank's error message (None: succeeded), in rank order."""
    errors: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(errors, error)
    return errors


@contextmanager
def process_group(shard: Shard) -> Iterator[None]:
    """A gloo process group while several ranks run (only small objects are exchanged)."""
    if shard.world_size == 1 or dist.is_initialized():
        yield
        return
    dist.init_process_group("gloo", rank=shard.rank, world_size=shard.world_size)
    try:
        yield
    finally:
        dist.destroy_process_group()


def launch(processes: int, module: str) -> None:
    """Run `python -m module` in `processes` processes under torchrun (this host only)."""
    from torch.distributed.run import main as torchrun

    torchrun(["--standalone", f"--nproc-per-node={processes}", "--module", module])
