"""Extraction sharded across processes (torchrun's job), run on CPU: 2 processes, gloo."""

import itertools
import socket
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch.distributed.run
import torch.multiprocessing as mp
from params_overrides import cpu_features
from PIL import Image

from imcap.features.extraction import extract_features
from imcap.features.sharding import Shard, launch, process_group
from imcap.features.store import FeatureStore


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
                extract_features(root / run, names, root / f"{run}.h5", "resnet18",
                                 cpu_features(image_size=32), shard)
                outcome = "ok"
            except Exception as err:
                outcome = f"{type(err).__name__}: {err}\n{traceback.format_exc()}"
            (root / f"{run}-rank{rank}.txt").write_text(outcome)


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
    assert merged.filenames == names
    extract_features(tmp_path / "good", names, tmp_path / "single.h5", "resnet18",
                     cpu_features(image_size=32))
    single = FeatureStore(tmp_path / "single.h5")
    for a, b in zip(merged.load(np.arange(7)), single.load(np.arange(7)), strict=True):
        assert np.allclose(a, b, rtol=1e-3, atol=1e-3)  # same seeded encoder on every rank
    assert merged.attrs["image_size"] == 32

    bad = tmp_path / "bad" / names[5]
    assert (tmp_path / "bad-rank1.txt").read_text().startswith(
        f"ImageReadError: {bad}: cannot read image")
    rank0 = (tmp_path / "bad-rank0.txt").read_text()
    assert rank0.startswith("ShardFailedError: feature extraction failed on rank 1")
    assert names[5] in rank0
    assert not (tmp_path / "bad.h5").exists()
    assert not list(tmp_path.glob(".*shard*")) and not list(tmp_path.glob(".*.tmp"))


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
    shard = Shard.from_env()
    assert shard == Shard(3, 4, 1)
    assert shard.path(Path("data/features/features.h5")).name == ".features.h5.shard-3-of-4"


def test_launch_runs_the_stage_under_torchrun(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.distributed.run, "main", calls.append)
    launch(4, "stages.features")
    assert calls == [["--standalone", "--nproc-per-node=4", "--module", "stages.features"]]
