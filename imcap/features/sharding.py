"""Feature extraction across several processes (one per GPU), started by torchrun.

Each rank encodes a contiguous slice of the images into its own shard file; the ranks then
exchange their outcome (a collective, so a failed rank cannot leave the others waiting) and
rank 0 merges the shards into the final store, atomically. So every rank must write where rank
0 reads: on several machines, the store's folder must be on storage every node shares, at the
same path. Before any work the ranks check that they see one folder (`check_shared_folder`), so
a node with its own disk fails at once, naming the folder, not after encoding.

Rank 0's shard is that store in the making: it has a row for every image (rank 0's slice, the
first, written), the other shards' rows are copied into it chunk by chunk as stored, and it is
renamed to the final path. The store stays one self-contained file (DVC caches it), and no
shard is copied twice.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path
from typing import Protocol

import h5py
import torch.distributed as dist

from imcap.atomic import atomic_path
from imcap.distributed import Shard
from imcap.features.store import merge_shards


class ShardFailedError(RuntimeError):
    """Another extraction rank failed; its message is included."""


class FolderNotSharedError(RuntimeError):
    """The ranks do not all see the folder rank 0 writes the store in (nodes with their own
    disks); the message names it and the first rank that does not see it."""


class ExtractionJob(Protocol):
    """Encodes image files into a new store (`imcap.features.extraction.Extraction`)."""

    def run(self, paths: list[Path], names: list[str], out: Path, progress: bool) -> None:
        """Encode `paths` into rows 0.. of a new store with a row per name (`names` may go on
        past `paths`: those rows are left unwritten)."""


def shard_file(out: Path, shard: Shard, rank: int | None = None) -> Path:
    """Shard file of `rank` (default: this one), hidden beside the final store."""
    rank = shard.rank if rank is None else rank
    return out.parent / f".{out.name}.shard-{rank}-of-{shard.world_size}"


def extract_shard(job: ExtractionJob, paths: list[Path], names: list[str], out: Path,
                  shard: Shard) -> None:
    """This rank encodes its slice into its shard file; once every rank is done, rank 0
    merges the shards into `out`. A failure on any rank fails every rank, naming it."""
    check_shared_folder(out.parent, shard)
    start, stop = shard.bounds(len(names))
    store_names = names if shard.rank == 0 else names[start:stop]  # rank 0: the final store's
    failure: Exception | None = None
    try:
        with atomic_path(shard_file(out, shard)) as tmp:
            job.run(paths[start:stop], store_names, tmp, progress=shard.rank == 0)
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
            merge(out, shard, start=stop)
    finally:
        if shard.rank == 0:  # every rank is past writing its shard (the collective above)
            remove_shards(out)


def check_shared_folder(folder: Path, shard: Shard) -> None:
    """Every rank: rank 0 leaves a uniquely named mark in `folder`, every rank looks for it;
    unless all of them see it, `FolderNotSharedError` on every rank."""
    mark = folder / f".shared-check.{uuid.uuid4().hex}" if shard.rank == 0 else None
    if mark is not None:
        folder.mkdir(parents=True, exist_ok=True)
        mark.touch()
    box = [mark]
    dist.broadcast_object_list(box, src=0)  # after rank 0 made the mark
    sights: list[tuple[bool, str] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(sights, (box[0].is_file(), socket.gethostname()))
    if mark is not None:  # every rank has looked (the collective above)
        mark.unlink()
    blind = [(rank, host) for rank, (seen, host) in enumerate(sights) if not seen]
    if blind:
        rank, host = blind[0]
        raise FolderNotSharedError(
            f"{folder}: rank {rank} (on {host}) does not see the folder rank 0 (on "
            f"{sights[0][1]}) writes the feature store in; on several machines, put "
            f"{folder} on storage every node shares, at the same path in each checkout "
            "(docs/training.md#several-gpus-or-machines)")


def merge(out: Path, shard: Shard, start: int) -> None:
    """Rank 0: copy the other ranks' shards into its own from row `start` on, which becomes
    `out`. A merge killed half-way leaves a temporary file, never a store at `out`."""
    with atomic_path(out) as tmp:
        os.replace(shard_file(out, shard, 0), tmp)
        with h5py.File(tmp, "r+") as h5:
            merge_shards(h5, [shard_file(out, shard, rank) for rank in range(1, shard.world_size)],
                         start)


def remove_shards(out: Path) -> None:
    """Delete the shard files of `out`, of any world size (e.g. left by an interrupted run)."""
    for stale in out.parent.glob(f".{out.name}.shard-*"):
        stale.unlink(missing_ok=True)


def gather_errors(error: str | None) -> list[str | None]:
    """Every rank's error message (None: succeeded), in rank order."""
    errors: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(errors, error)
    return errors
