"""Training the decoder in two phases over one epoch driver (`imcap.training.driver`):

- the cross-entropy epochs (`cross_entropy_phase`): teacher forcing, Adam, gradient clipping,
  a learning rate per epoch (`imcap.training.schedule`), early stopping on validation BLEU-4;
  then the published model (`publish`): whichever validates higher of the best epoch and the
  mean of the weights of the `train.average_last` epochs ending at it;
- with `train.scst_epochs`, the self-critical epochs from that model
  (`imcap.training.self_critical`), whose last weights are published.

`train_decoder` sets up what both share: the model, its optimizers, the resume state (resumable
after every epoch, `imcap.training.resume`) and the ranks (`imcap.training.device`).
Seeded and repeatable on CPU."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from imcap.data.vocab import Vocabulary
from imcap.distributed import Shard, broadcast_from_leader, process_group
from imcap.evaluation.split_evaluation import SplitEvaluation
from imcap.features.splits import CaptionedSplit
from imcap.model.checkpoint import save_checkpoint
from imcap.model.decoder import DecoderConfig
from imcap.model.registry import build_decoder
from imcap.training.averaging import LastEpochs
from imcap.training.batches import epoch_loader, plan_epoch
from imcap.training.device import (
    autocast_dtype,
    cpu_threads,
    deterministic_algorithms,
    training_device,
)
from imcap.training.driver import EpochDriver
from imcap.training.epoch import check_finite, train_epoch
from imcap.training.finetuning import Finetuning
from imcap.training.params import TrainParams
from imcap.training.resume import STATE_FILE, EpochLog, Progress, load_state
from imcap.training.schedule import EpochSchedule
from imcap.training.scheduled_sampling import teacher_forcing_at
from imcap.training.self_critical import self_critical_phase

Published = tuple[int, float, float | None]  # epochs averaged, its val BLEU-4, the mean's


@dataclass(frozen=True)
class TrainResult:
    best_epoch: int
    best_val_bleu4: float
    epochs_run: int
    stopped_early: bool
    averaged_epochs: int  # epochs the cross-entropy model averages, ending at best_epoch; 0: it
    model_val_bleu4: float  # validation BLEU-4 of the published model
    average_val_bleu4: float | None  # of the mean of the epochs ending at best_epoch (None: none)
    scst_epochs_run: int = 0  # self-critical epochs after the cross-entropy ones
    scst_reward: float = 0.0  # the mean reward of the last self-critical epoch's samples

    @property
    def published(self) -> str:
        """Which weights the published model is: "mean of epochs 13-15", "epoch 15", and
        with self-critical epochs "self-critical epoch 25 (from epoch 15)"."""
        first = self.best_epoch - self.averaged_epochs + 1
        model = (f"mean of epochs {first}-{self.best_epoch}" if self.averaged_epochs
                 else f"epoch {self.best_epoch}")
        if self.scst_epochs_run:
            return f"self-critical epoch {self.epochs_run + self.scst_epochs_run} (from {model})"
        return model


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank `rank`'s random draws (dropout, sampled words): `seed` + rank, within
    the 32 bits NumPy takes."""
    return (seed + rank) % 2**32


def train_decoder(
    config: DecoderConfig,
    settings: TrainParams,
    embeddings: torch.Tensor,
    train_data: CaptionedSplit,
    val_data: CaptionedSplit,
    vocab: Vocabulary,
    checkpoint_path: Path,
    *,
    seed: int,
    on_epoch: Callable[[EpochLog], None] = lambda log: None,
    state_dir: Path | None = None,
    finetuning: Finetuning | None = None,
) -> TrainResult:
    """Train; the published model at `checkpoint_path` (`publish`): the epoch with the best
    validation BLEU-4, or the mean of the weights at the end of the `average_last` epochs that
    end at it when that validates at least as high.

    With `state_dir`, the resume state is written there after every epoch and a run finding
    one continues from it (`on_epoch` first sees the epochs already done), printing from
    which epoch, or why it starts over. Under torchrun every rank calls this (with the same
    `seed`; rank r draws dropout from seed + r); only rank 0 reads and writes the state, calls
    `on_epoch`, validates and decides when to stop, for every rank.

    With `finetuning`, the splits' `grid` holds the frozen trunk's outputs and its tuned
    stages train in front of the decoder, as one model (`imcap.training.finetuning`).
    """
    shard = Shard.from_env()
    device = training_device(settings.device, shard)
    with (process_group(shard, device), deterministic_algorithms(settings.deterministic),
          cpu_threads(settings.cpu_threads)):
        seed_everything(seed)
        model = build_decoder(config, embeddings, settings.freeze_embeddings)
        if finetuning is not None:
            model = finetuning.model(model)
        model = model.to(device)
        optimizer = torch.optim.Adam(parameters(model, finetuning, settings.learning_rate),
                                     lr=settings.learning_rate)
        shuffle = torch.Generator().manual_seed(seed)  # the same data order on every rank
        if shard.rank:  # dropout and sampled words: each rank draws its own
            seed_everything(rank_seed(seed, shard.rank))
        state_file = state_dir / STATE_FILE if state_dir is not None else None
        schedule = EpochSchedule(optimizer, settings)
        resumable = {"model": model, "optimizer": optimizer, "lr_schedule": schedule}
        # With train.average_last, the mean of the weights at the end of the epochs up to the
        # best one may be published (imcap.training.averaging): less seed noise than one epoch.
        last_epochs = LastEpochs(settings.average_last)
        if settings.average_last:
            resumable["last_epochs"] = last_epochs
        if settings.scst_epochs:  # a fresh Adam at its own rate, saved once it has stepped
            resumable["scst_optimizer"] = torch.optim.Adam(
                parameters(model, finetuning, settings.scst_learning_rate),
                lr=settings.scst_learning_rate)
        # Rank 0 reads the state and sends it to every rank.
        progress, note = load_state(state_file, resumable, shuffle, shard, settings.epochs,
                                    later=frozenset({"scst_optimizer"}))
        if note and shard.rank == 0:
            tqdm.write(note)
        for log in progress.history if shard.rank == 0 else []:
            on_epoch(log)
        if settings.compile:
            model.compile_steps()
        trained: nn.Module = model
        if shard.world_size > 1:
            # before train.finetune_from_epoch the tuned stages take no gradient
            trained = DistributedDataParallel(model, find_unused_parameters=(
                finetuning is not None and finetuning.from_epoch > 1))
        driver = EpochDriver(model, trained, settings, train_data, val_data, vocab,
                             checkpoint_path, device, autocast_dtype(settings.precision, device),
                             shard, shuffle, resumable, state_file, on_epoch)
        progress, published = cross_entropy_phase(driver, optimizer, schedule, last_epochs,
                                                  progress, finetuning)
        model_bleu4 = published[1]
        if settings.scst_epochs:
            if finetuning is not None:  # the self-critical epochs tune the encoder too
                model.tuning = True
            progress = self_critical_phase(driver, resumable["scst_optimizer"], progress,
                                           published)
            model_bleu4 = progress.history[-1].val_bleu4
    return TrainResult(progress.best_epoch, progress.best_bleu, progress.epoch,
                       stopped_early=(progress.stale >= settings.patience
                                      and progress.epoch < settings.epochs),
                       averaged_epochs=published[0], model_val_bleu4=model_bleu4,
                       average_val_bleu4=published[2], scst_epochs_run=progress.scst_epoch,
                       scst_reward=progress.history[-1].scst_reward or 0.0)


def cross_entropy_phase(driver: EpochDriver, optimizer: torch.optim.Optimizer,
                        schedule: EpochSchedule, last_epochs: LastEpochs, progress: Progress,
                        finetuning: Finetuning | None = None) -> tuple[Progress, Published]:
    """The cross-entropy epochs not yet run, until `train.patience` epochs without a better
    validation BLEU-4 (rank 0 saves each new best at the checkpoint path); then the published
    model, the same on every rank (`publish`; already chosen when resumed in the self-critical
    epochs). With `finetuning`, its stages train from its first epoch on."""
    settings, shard = driver.settings, driver.shard

    def train(epoch: int) -> float:
        if finetuning is not None:
            finetuning.start_epoch(driver.model, epoch)
        windows = plan_epoch(driver.train_data, settings.batch_size, driver.shuffle,
                             shard.world_size,
                             settings.image_window if settings.batching == "images" else None)
        train_loss = train_epoch(
            driver.trained, optimizer,
            epoch_loader(driver.train_data, windows, shard, driver.device, settings.num_workers),
            grad_clip=settings.grad_clip, teacher_forcing=teacher_forcing_at(settings, epoch),
            dtype=driver.dtype, device=driver.device, world_size=shard.world_size,
            progress=f"epoch {epoch}/{settings.epochs}" if driver.leader else "",
            label_smoothing=settings.label_smoothing,
            attention_regularization=settings.attention_regularization)
        # the same loss, so the same stop, on every rank
        check_finite(train_loss, epoch, optimizer.param_groups[0]["lr"])
        if settings.average_last:
            last_epochs.add(driver.model)
        return train_loss

    def record(progress: Progress, epoch: int, train_loss: float,
               val: SplitEvaluation) -> EpochLog:
        log = EpochLog(epoch, train_loss, val.loss, val.bleu["bleu4"])
        progress.epoch = epoch
        progress.history.append(log)
        if log.val_bleu4 > progress.best_bleu:
            progress.best_bleu, progress.best_epoch, progress.stale = log.val_bleu4, epoch, 0
            save_checkpoint(driver.checkpoint_path, driver.model, epoch, log.val_bleu4)
            last_epochs.keep_best()
        else:
            progress.stale += 1
        return log

    progress = driver.run(progress, range(progress.epoch + 1, settings.epochs + 1), train,
                          record, stop=lambda progress: progress.stale >= settings.patience,
                          schedule=schedule)
    if progress.scst_epoch:  # published before the self-critical epochs began
        assert progress.published is not None
        return progress, progress.published
    published = publish(driver, last_epochs, progress) if driver.leader else None
    published = broadcast_from_leader(published, shard)  # one result on every rank
    assert published is not None
    return progress, published


def parameters(model: nn.Module, finetuning: Finetuning | None, learning_rate: float
               ) -> list[nn.Parameter] | list[dict]:
    """What Adam trains: the decoder's trainable weights, and with `finetuning` the tuned
    stages' in a group at their own rate."""
    if finetuning is not None:
        return finetuning.param_groups(model, learning_rate)
    return [p for p in model.parameters() if p.requires_grad]


def publish(driver: EpochDriver, last_epochs: LastEpochs, progress: Progress) -> Published:
    """Rank 0, once the cross-entropy epochs are over: the published model at the checkpoint
    path is the best epoch's (saved there when it was the best), unless the mean of the
    weights of the epochs ending at it (`last_epochs.best`) validates at least as high: then
    that mean replaces it. Says which; returns (epochs averaged, 0 for the best epoch alone;
    the published model's validation BLEU-4; the mean's, None when there was none to
    validate). The model is left with any weights."""
    best, count = progress.best_epoch, last_epochs.best_count
    if count < 2:  # averaging off, or the best epoch was the first
        tqdm.write(f"published: epoch {best}, val BLEU-4 {progress.best_bleu:.2f}")
        return 0, progress.best_bleu, None
    driver.model.load_state_dict(last_epochs.best)
    bleu4 = driver.validate().bleu["bleu4"]
    mean = f"the mean of the weights of epochs {best - count + 1}-{best}"
    if bleu4 < progress.best_bleu:
        tqdm.write(f"published: epoch {best}, val BLEU-4 {progress.best_bleu:.2f} (the best; "
                   f"{mean}: {bleu4:.2f})")
        return 0, progress.best_bleu, bleu4
    save_checkpoint(driver.checkpoint_path, driver.model, best, bleu4)
    tqdm.write(f"published: {mean}, val BLEU-4 {bleu4:.2f} (epoch {best} alone: "
               f"{progress.best_bleu:.2f})")
    return count, bleu4, bleu4
