"""Training reads features lazily: peak RSS of an epoch of data loading from a multi-GB store.

    python benchmarks/feature_store_memory.py --images 20000            # 4.1 GB store
    python benchmarks/feature_store_memory.py --images 2400 --regions 9 --channels 512 \\
        --compare-in-memory                                             # the default run's size

Writes a synthetic store (N × R × C float16 grid, ResNet-101 at 224 px by default: 49 × 2048)
into --dir, then, in a fresh process, runs one epoch the way training indexes a split: captions
(5 per image) in shuffled order, batches of 128, `grid[owner]` and `pooled[owner]` read from the
store through `FeatureStore.rows` (the `StoreRows` view `imcap.features.splits.load_split` hands to
training above `train.features_in_memory_gb`). Every batch is checked against the rows it
asked for. Prints the store size, the epoch's time and the process's peak RSS (ru_maxrss:
resident memory; the kernel's page cache holding the file is not the process's and is
reclaimable). The store is deleted afterwards unless --keep.

Needs h5py, numpy and torch only (no DVC, MLflow or nltk).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imcap.features.store import FeatureStore, create_store

BLOCK = 256  # rows written at a time


def write_store(path: Path, images: int, regions: int, channels: int) -> None:
    """Random float16 grids (one random block, reused) and pooled[i, 0] = i to check reads."""
    rng = np.random.default_rng(0)
    block = rng.standard_normal((BLOCK, regions, channels), dtype=np.float32).astype(np.float16)
    with h5py.File(path, "w") as h5:
        grid, pooled = create_store(h5, [f"{i:07d}.jpg" for i in range(images)], regions,
                                    channels, "float16", {"encoder": "synthetic"})
        for start in range(0, images, BLOCK):
            stop = min(start + BLOCK, images)
            grid[start:stop] = block[: stop - start]
            rows = np.zeros((stop - start, channels), dtype=np.float32)
            rows[:, 0] = np.arange(start, stop)
            pooled[start:stop] = rows


def epoch(path: Path, captions_per_image: int, batch_size: int, in_memory: bool) -> dict:
    """One epoch of training's data loading; returns timings and peak RSS (this process)."""
    rss_start = _peak_rss_mb()
    store = FeatureStore(path)
    images = np.arange(len(store))  # the split: every image
    grid, pooled = store.rows("grid", images), store.rows("pooled", images)
    if in_memory:
        grid, pooled = grid.load(), pooled.load()
    owner = torch.arange(len(images)).repeat_interleave(captions_per_image)
    order = torch.randperm(len(owner), generator=torch.Generator().manual_seed(0))
    started = time.perf_counter()
    bytes_read = 0
    for rows in order.split(batch_size):
        batch_grid, batch_pooled = grid[owner[rows]], pooled[owner[rows]]
        if not torch.equal(batch_pooled[:, 0], owner[rows].float()):
            raise AssertionError("a batch holds other rows than it asked for")
        bytes_read += batch_grid.nbytes + batch_pooled.nbytes
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 2), "batches": len(order.split(batch_size)),
            "GB_read": round(bytes_read / 1e9, 2), "peak_rss_mb_before_epoch": rss_start,
            "peak_rss_mb": _peak_rss_mb()}


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--regions", type=int, default=49)
    parser.add_argument("--channels", type=int, default=2048)
    parser.add_argument("--captions-per-image", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--dir", type=Path, default=Path("/tmp"))
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--compare-in-memory", action="store_true",
                        help="also time an epoch with the split loaded into RAM")
    parser.add_argument("--epoch-only", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--in-memory", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.epoch_only:  # the child process: a clean RSS measurement
        print(json.dumps(epoch(args.epoch_only, args.captions_per_image, args.batch_size,
                               args.in_memory)))
        return
    size = args.images * (args.regions * args.channels * 2 + args.channels * 4)
    free = shutil.disk_usage(args.dir).free
    if free < 1.5 * size:
        sys.exit(f"{args.dir}: {free / 1e9:.1f} GB free, the store needs {size / 1e9:.1f} GB")
    path = args.dir / f"imcap-memory-bench-{args.images}.h5"
    try:
        started = time.perf_counter()
        write_store(path, args.images, args.regions, args.channels)
        print(f"store: {path}, {args.images} x {args.regions} x {args.channels} float16 grid + "
              f"pooled = {path.stat().st_size / 1e9:.2f} GB, written in "
              f"{time.perf_counter() - started:.0f} s")
        modes = [False, True] if args.compare_in_memory else [False]
        for in_memory in modes:
            command = [sys.executable, __file__, "--epoch-only", str(path),
                       "--captions-per-image", str(args.captions_per_image),
                       "--batch-size", str(args.batch_size)]
            result = json.loads(subprocess.run(command + ["--in-memory"] * in_memory,
                                               check=True, capture_output=True,
                                               text=True).stdout)
            print(f"{'in memory' if in_memory else 'lazy':>9}: one epoch ({result['batches']} "
                  f"batches of {args.batch_size} captions, {result['GB_read']} GB of features) "
                  f"in {result['seconds']} s; peak RSS {result['peak_rss_mb']} MB "
                  f"({result['peak_rss_mb_before_epoch']} MB after imports)")
    finally:
        if not args.keep:
            path.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
