"""Extraction sharded across processes (torchrun's job), run on CPU: 2 processes, gloo."""

import itertools
import socket
import traceback
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch.distributed.run
import torch.multiprocessing as mp
from params_overrides import cpu_features
from PIL import Image

from imcap.distributed import Shard, launch, process_group
from imcap.features.extraction import extract_features
from imcap.features.sharding import merge, shard_file
from imcap.features.store import FeatureStore, StoreFormatError, create_store

# Batches of one image: a batch's size changes the encoder's rounding (oneDNN), and the ranks'
# batches would differ from one process's.
CONFIG = cpu_features(image_size=32, batch_size=1)


def _images(directory: Path, count: int) -> list[str]:
    directory.mkdir()
    rng = np.random.default_rng(0)
    names = []
    for i in range(count):
        names.append(f"{i:02d}.png")
        Image.fromarray(rng.integers(0, 255, (24, 30 + i, 3), dtype=np.uint8)).save(
            directory / names[-1])
    return names


def _rank(rank: int, world: int, port: int, root: Path, names: list[str]) -> None:
    """One torchrun rank: a good extraction, then one whose rank-1 slice has a corrupt image.
    Each outcome is written to a file for the parent to check."""
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    shard = Shard(rank, world, local_rank=rank)
    with process_group(shard):
        for run in ("good", "bad"):
            try:
                extract_features(root / run, names, root / f"{run}.h5", "resnet18", CONFIG,
                                 shard)
                outcome = "ok"
            except Exception as err:
                outcome = f"{type(err).__name__}: {err}\n{traceback.format_exc()}"
            (root / f"{run}-rank{rank}.txt").write_text(outcome)


def _contents(path: Path) -> tuple[dict, dict]:
    """Every dataset as (its bits: raw bytes, or the strings; dtype; chunks), and the attrs."""
    with h5py.File(path) as h5:
        datasets = {name: (h5[name][:].tolist() if h5[name].dtype.hasobject
                           else h5[name][:].tobytes(), h5[name].dtype, h5[name].chunks)
                    for name in h5}
        return datasets, {key: np.asarray(value).tolist() for key, value in h5.attrs.items()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_shard_and_merge_into_one_store_and_report_a_failure(tmp_path):
    names = _images(tmp_path / "good", 7)
    (tmp_path / "bad").mkdir()
    for name in names:
        (tmp_path / "bad" / name).write_bytes((tmp_path / "good" / name).read_bytes())
    (tmp_path / "bad" / names[5]).write_bytes(b"broken")  # in rank 1's slice (images 3..6)

    mp.spawn(_rank, args=(2, _free_port(), tmp_path, names), nprocs=2, join=True)

    assert (tmp_path / "good-rank0.txt").read_text() == "ok"
    assert (tmp_path / "good-rank1.txt").read_text() == "ok"
    merged = FeatureStore(tmp_path / "good.h5")
    assert merged.filenames == names and merged.attrs["image_size"] == 32
    extract_features(tmp_path / "good", names, tmp_path / "single.h5", "resnet18", CONFIG)
    # the same seeded encoder on every rank, the same batches: bit for bit one process's store
    assert _contents(tmp_path / "good.h5") == _contents(tmp_path / "single.h5")

    bad = tmp_path / "bad" / names[5]
    assert (tmp_path / "bad-rank1.txt").read_text().startswith(
        f"ImageReadError: {bad}: cannot read image")
    rank0 = (tmp_path / "bad-rank0.txt").read_text()
    assert rank0.startswith("ShardFailedError: feature extraction failed on rank 1")
    assert names[5] in rank0
    assert not (tmp_path / "bad.h5").exists()
    assert not list(tmp_path.glob(".*shard*")) and not list(tmp_path.glob(".*.tmp"))


def _shard(path: Path, names: list[str], written: int) -> None:
    with h5py.File(path, "w") as h5:
        grid, pooled = create_store(h5, names, 2, 3, "float16", {"encoder": "test"})
        grid[:written], pooled[:written] = 1, 1


def test_a_failed_merge_leaves_the_previous_store_and_no_half_store(tmp_path):
    out = tmp_path / "features.h5"
    out.write_bytes(b"the previous store")
    shard = Shard(0, 2)
    _shard(shard_file(out, shard, 0), ["a", "b", "c", "d"], written=2)
    _shard(shard_file(out, shard, 1), ["c", "x"], written=2)  # not the images of rows 2..3
    with pytest.raises(StoreFormatError, match="its images are not rows 2"):
        merge(out, shard, start=2)
    assert out.read_bytes() == b"the previous store"
    # rank 0's half-merged shard went with the merge's temporary folder
    assert sorted(tmp_path.iterdir()) == [shard_file(out, shard, 1), out]


@pytest.mark.parametrize(("n", "world"), [(7, 2), (10, 3), (2, 4), (0, 2)])
def test_shard_bounds_are_contiguous_and_cover_everything(n, world):
    bounds = [Shard(rank, world).bounds(n) for rank in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1


def test_shard_from_torchrun_environment(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert Shard.from_env() == Shard(3, 4, 1, 4)  # no node size given: every rank on this one
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    shard = Shard.from_env()
    assert shard == Shard(3, 4, 1, 2)
    assert shard_file(Path("data/features/features.h5"), shard).name == ".features.h5.shard-3-of-4"


def test_launch_runs_the_stage_under_torchrun(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.distributed.run, "main", calls.append)
    launch(4, "stages.features")
    assert calls == [["--standalone", "--nproc-per-node=4", "--module", "stages.features"]]
