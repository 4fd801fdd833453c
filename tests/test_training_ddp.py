"""DistributedDataParallel on 2 CPU processes (gloo) follows single-process training on the
same global batch."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from params_overrides import cpu_training
from test_training import CONFIG, EMBEDDINGS, VOCAB, _split

from imcap.training.loop import train_decoder

SETTINGS = cpu_training(epochs=3, batch_size=16, learning_rate=0.01)


def _train(out, checkpoint) -> None:
    logs = []
    train_decoder(CONFIG, SETTINGS, EMBEDDINGS, _split(64, 0), _split(16, 1), VOCAB, checkpoint,
                  seed=2, on_epoch=logs.append)
    if logs:
        torch.save([(log.train_loss, log.val_loss) for log in logs], out)


def _rank(rank: int, world: int, port: int, tmp: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    _train(f"{tmp}/ddp.pt", f"{tmp}/ddp-model.pt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_match_one_process(tmp_path):
    _train(tmp_path / "single.pt", tmp_path / "single-model.pt")
    mp.spawn(_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    single = torch.load(tmp_path / "single.pt")
    ddp = torch.load(tmp_path / "ddp.pt")
    assert len(ddp) == len(single) == 3
    for (train_a, val_a), (train_b, val_b) in zip(single, ddp, strict=True):
        assert train_a == pytest.approx(train_b, abs=1e-5)
        assert val_a == pytest.approx(val_b, abs=1e-5)
