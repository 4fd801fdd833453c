"""The epoch driver both training phases run on (the cross-entropy epochs,
`imcap.training.loop`, and the self-critical ones, `imcap.training.self_critical`).

Each epoch: every rank trains; rank 0 validates and records the epoch in the progress; then
every rank takes rank 0's progress (one stop decision, one learning rate for the next epoch),
and rank 0 saves the resume state, reports the epoch and prints it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn
from tqdm import tqdm

from imcap.data.vocab import Vocabulary
from imcap.distributed import Shard, broadcast_from_leader
from imcap.evaluation.split_evaluation import SplitEvaluation, evaluate_split
from imcap.features.splits import CaptionedSplit
from imcap.training.params import TrainParams
from imcap.training.resume import EpochLog, Progress, Stateful, rng_states, save_state
from imcap.training.schedule import EpochSchedule

T = TypeVar("T")


@dataclass(frozen=True)
class EpochDriver:
    """What every epoch of either phase shares: the model (`trained`: what steps call, the
    model or its DistributedDataParallel wrapper), the data, where this rank runs, and the
    resume state's parts and file."""

    model: nn.Module
    trained: nn.Module
    settings: TrainParams
    train_data: CaptionedSplit
    val_data: CaptionedSplit
    vocab: Vocabulary
    checkpoint_path: Path
    device: torch.device
    dtype: torch.dtype
    shard: Shard
    shuffle: torch.Generator  # the data order, the same on every rank
    resumable: dict[str, Stateful]
    state_file: Path | None
    on_epoch: Callable[[EpochLog], None]

    @property
    def leader(self) -> bool:
        """Rank 0: the one that validates, saves and reports."""
        return self.shard.rank == 0

    def validate(self) -> SplitEvaluation:
        return evaluate_split(self.model, self.val_data, self.vocab, self.device,
                              self.settings.max_length)

    def run(self, progress: Progress, epochs: Iterable[int], train: Callable[[int], T],
            record: Callable[[Progress, int, T, SplitEvaluation], EpochLog], *,
            stop: Callable[[Progress], bool] = lambda progress: False,
            schedule: EpochSchedule | None = None) -> Progress:
        """The `epochs` until `stop(progress)`: `train(epoch)` on every rank; on rank 0, the
        validation and `record(progress, epoch, what train returned, validation)`, which
        updates `progress` and returns the epoch's log; then `end_epoch`."""
        for epoch in epochs:
            if stop(progress):
                break
            trained = train(epoch)
            log = None
            if self.leader:  # validates once; the others wait for its progress
                log = record(progress, epoch, trained, self.validate())
            progress = self.end_epoch(progress, log, schedule)
        return progress

    def end_epoch(self, progress: Progress, log: EpochLog | None,
                  schedule: EpochSchedule | None = None) -> Progress:
        """Every rank, after an epoch: rank 0's `progress` (hence one stop decision, and one
        learning rate for the next epoch from `schedule`) on every rank; rank 0 saves the
        resume state, reports `log` and prints it."""
        progress = broadcast_from_leader(progress, self.shard)
        if schedule is not None:
            schedule.step(progress.history[-1])
        rngs = rng_states(self.shuffle, self.shard)  # every rank's, on rank 0
        if self.leader:
            assert log is not None
            if self.state_file is not None:
                save_state(self.state_file, self.resumable, progress, rngs)
            self.on_epoch(log)
            trained = (f"train loss {log.train_loss:.3f}" if log.scst_reward is None else
                       f"self-critical reward {log.scst_reward:.3f} (baseline "
                       f"{log.scst_baseline_reward:.3f})")
            tqdm.write(f"epoch {log.epoch}: {trained}, val loss {log.val_loss:.3f}, "
                       f"val BLEU-4 {log.val_bleu4:.2f}")
        return progress
