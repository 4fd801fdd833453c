"""DistributedDataParallel on 2 CPU processes (gloo) follows single-process training on the
same global batch; killed and resumed it ends exactly as the uninterrupted run, with no shared
filesystem and dropout drawn per rank; the ranks never disagree on when to stop."""

import dataclasses
import os
import socket
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from params_overrides import cpu_training
from test_training import CONFIG, EMBEDDINGS, VOCAB, _split

from imcap.evaluation.split_evaluation import SplitEvaluation
from imcap.training import driver, loop
from imcap.training.loop import train_decoder
from imcap.training.resume import STATE_FILE

SETTINGS = cpu_training(epochs=3, batch_size=16, learning_rate=0.01)


def _train(out, checkpoint, config=CONFIG) -> None:
    logs = []
    train_decoder(config, SETTINGS, EMBEDDINGS, _split(64, 0), _split(16, 1), VOCAB, checkpoint,
                  seed=2, on_epoch=logs.append)
    if logs:
        torch.save([(log.train_loss, log.val_loss) for log in logs], out)


def _rank(rank: int, world: int, port: int, tmp: str, config=CONFIG) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    _train(f"{tmp}/ddp.pt", f"{tmp}/ddp-model.pt", config)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("config", [CONFIG, dataclasses.replace(CONFIG, decoder="updown")],
                         ids=["lstm", "updown"])
def test_two_gloo_ranks_match_one_process(tmp_path, config):
    _train(tmp_path / "single.pt", tmp_path / "single-model.pt", config)
    mp.spawn(_rank, args=(2, _free_port(), str(tmp_path), config), nprocs=2, join=True)
    single = torch.load(tmp_path / "single.pt")
    ddp = torch.load(tmp_path / "ddp.pt")
    assert len(ddp) == len(single) == 3
    for (train_a, val_a), (train_b, val_b) in zip(single, ddp, strict=True):
        assert train_a == pytest.approx(train_b, abs=1e-5)
        assert val_a == pytest.approx(val_b, abs=1e-5)


# Dropout and teacher forcing < 1 draw from each rank's own RNG.
DROPOUT = dataclasses.replace(CONFIG, dropout=0.3)
RESUMED = cpu_training(epochs=3, batch_size=16, learning_rate=0.01, teacher_forcing=0.7)


class Killed(Exception):
    pass


def _join(rank: int, world: int, port: int) -> None:
    """This process as rank `rank`, in a group that fails in a minute rather than hang."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=timedelta(seconds=60))


def _resumable_rank(rank: int, world: int, port: int, run: str, kill_after: int) -> None:
    """Rank 0 dies after epoch `kill_after` (0: never). Each rank has its own state folder, as
    on machines without a shared filesystem: only rank 0's is ever written."""
    _join(rank, world, port)
    logs = []

    def on_epoch(log):
        logs.append(log)
        if log.epoch == kill_after:
            raise Killed
    result = train_decoder(DROPOUT, RESUMED, EMBEDDINGS, _split(64, 0), _split(16, 1), VOCAB,
                           Path(run) / "model.pt", seed=2, on_epoch=on_epoch,
                           state_dir=Path(run) / f"state-{rank}")
    torch.save({"result": result, "logs": logs, "seed": torch.initial_seed()},
               Path(run) / f"rank-{rank}.pt")
    dist.destroy_process_group()


def _outcome(run: Path) -> tuple[list, list, dict]:
    ranks = [torch.load(run / f"rank-{rank}.pt", weights_only=False) for rank in range(2)]
    model = torch.load(run / "model.pt", weights_only=True)["state_dict"]
    return [r["result"] for r in ranks], ranks[0]["logs"], model


def test_two_ranks_killed_and_resumed_end_as_the_uninterrupted_run(tmp_path):
    straight, run = tmp_path / "straight", tmp_path / "run"
    mp.spawn(_resumable_rank, args=(2, _free_port(), str(straight), 0), nprocs=2, join=True)
    with pytest.raises(mp.ProcessRaisedException, match="Killed"):
        mp.spawn(_resumable_rank, args=(2, _free_port(), str(run), 1), nprocs=2, join=True)
    assert (run / "state-0" / STATE_FILE).is_file()
    assert not (run / "state-1" / STATE_FILE).exists()
    mp.spawn(_resumable_rank, args=(2, _free_port(), str(run), 0), nprocs=2, join=True)

    results, logs, model = _outcome(straight)
    resumed_results, resumed_logs, resumed_model = _outcome(run)
    assert results[0] == results[1] and results[0].epochs_run == 3
    assert resumed_results == results  # every rank: the same epochs, best epoch and BLEU
    assert resumed_logs == logs  # epoch 1 from the state, 2-3 trained again
    assert all(torch.equal(model[key], resumed_model[key]) for key in model)
    seeds = [torch.load(straight / f"rank-{rank}.pt", weights_only=False)["seed"]
             for rank in range(2)]
    assert seeds == [2, 3]  # seed + rank: the ranks draw different dropout masks


def _validating_rank(rank: int, world: int, port: int, tmp: str) -> None:
    """Validation that would disagree between ranks (as numerics on two GPUs may): rank 0's
    BLEU-4 improves every epoch, rank 1's never does."""
    _join(rank, world, port)
    scores = iter([1.0, 2.0, 3.0] if rank == 0 else [1.0, 1.0, 1.0])
    driver.evaluate_split = lambda *args, **kwargs: SplitEvaluation(1.0, {"bleu4": next(scores)},
                                                                  [])
    # average_last 0: no validation of averaged weights after the 3 scores above
    result = train_decoder(CONFIG, cpu_training(epochs=3, patience=1, average_last=0), EMBEDDINGS,
                           _split(32, 0), _split(8, 1), VOCAB, Path(tmp) / "model.pt", seed=2)
    torch.save(result, Path(tmp) / f"rank-{rank}.pt")
    dist.destroy_process_group()


def test_the_ranks_share_one_stop_decision(tmp_path):
    mp.spawn(_validating_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank-{rank}.pt", weights_only=False) for rank in (0, 1)]
    assert results[0] == results[1]
    assert (results[0].epochs_run, results[0].stopped_early) == (3, False)  # rank 0's scores



def _self_critical_rank(rank: int, world: int, port: int, tmp: str) -> None:
    """Cross-entropy then self-critical epochs, each rank sampling for its share of every
    batch's images; each rank saves its result and its weights at the end."""
    _join(rank, world, port)
    weights = {}
    self_critical_phase = loop.self_critical_phase

    def keep_weights(epochs, *args, **kwargs):
        progress = self_critical_phase(epochs, *args, **kwargs)
        weights.update(epochs.model.state_dict())
        return progress
    loop.self_critical_phase = keep_weights
    settings = cpu_training(epochs=2, batch_size=16, learning_rate=0.01, scst_epochs=2,
                            scst_batch_size=8)
    result = train_decoder(DROPOUT, settings, EMBEDDINGS, _split(32, 0), _split(8, 1), VOCAB,
                           Path(tmp) / "model.pt", seed=2)
    torch.save({"result": result, "weights": weights}, Path(tmp) / f"rank-{rank}.pt")
    dist.destroy_process_group()


def test_self_critical_epochs_keep_the_ranks_weights_equal(tmp_path):
    """They start from rank 0's published (averaged) model and DDP syncs their gradients."""
    mp.spawn(_self_critical_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank-{rank}.pt", weights_only=False) for rank in (0, 1)]
    assert ranks[0]["result"] == ranks[1]["result"]
    assert ranks[0]["result"].scst_epochs_run == 2
    published = torch.load(tmp_path / "model.pt", weights_only=True)["state_dict"]
    for rank in ranks:
        assert all(torch.equal(rank["weights"][key], published[key]) for key in published)
