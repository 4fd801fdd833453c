"""Training the decoder: teacher forcing, Adam, gradient clipping, best-by-validation-BLEU-4
checkpoint, early stopping, resumable after every epoch (`imcap.training.resume`), on one or
several processes (`imcap.training.runtime`). Seeded and repeatable on CPU."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from imcap.data.vocab import Vocabulary
from imcap.evaluation.split_evaluation import evaluate_split
from imcap.features.sharding import Shard
from imcap.features.splits import CaptionedSplit
from imcap.model.checkpoint import save_checkpoint
from imcap.model.decoder import DecoderConfig
from imcap.model.registry import build_decoder
from imcap.training.batches import epoch_loader, plan_epoch
from imcap.training.config import TrainParams
from imcap.training.epoch import train_epoch
from imcap.training.resume import STATE_FILE, EpochLog, Progress, load_state, save_state
from imcap.training.runtime import (
    autocast_dtype,
    deterministic_algorithms,
    process_group,
    training_device,
)


@dataclass(frozen=True)
class TrainResult:
    best_epoch: int
    best_val_bleu4: float
    epochs_run: int
    stopped_early: bool


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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
) -> TrainResult:
    """Train, keeping the checkpoint with the best validation BLEU-4 at `checkpoint_path`.

    With `state_dir`, the resume state is written there after every epoch and a run finding
    one continues from it (`on_epoch` first sees the epochs already done). Under torchrun
    every rank calls this; only rank 0 calls `on_epoch` and writes files.
    """
    shard = Shard.from_env()
    device = training_device(settings.device, shard)
    with process_group(shard, device), deterministic_algorithms(settings.deterministic):
        seed_everything(seed)
        model = build_decoder(config, embeddings, settings.freeze_embeddings).to(device)
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad],
                                     lr=settings.learning_rate)
        shuffle = torch.Generator().manual_seed(seed)
        if shard.world_size > 1:
            dist.barrier()  # rank 0 has claimed (or emptied) the state directory
        state_file = state_dir / STATE_FILE if state_dir is not None else None
        progress = (load_state(state_file, model, optimizer, shuffle) if state_file
                    else Progress())
        leader = shard.rank == 0
        for log in progress.history if leader else []:
            on_epoch(log)
        if settings.compile:
            model.compile_steps()
        trained: nn.Module = model
        if shard.world_size > 1:
            trained = DistributedDataParallel(model)
        dtype = autocast_dtype(settings.precision, device)
        for epoch in range(progress.epoch + 1, settings.epochs + 1):
            if progress.stale >= settings.patience:
                break
            windows = plan_epoch(train_data, settings.batch_size, shuffle, shard.world_size,
                                 settings.image_window if settings.batching == "images" else None)
            train_loss = train_epoch(
                trained, optimizer,
                epoch_loader(train_data, windows, shard, device, settings.num_workers),
                grad_clip=settings.grad_clip, teacher_forcing=settings.teacher_forcing,
                dtype=dtype, device=device, world_size=shard.world_size,
                progress=f"epoch {epoch}/{settings.epochs}" if leader else "")
            val = evaluate_split(model, val_data, vocab, device, settings.max_length)
            log = EpochLog(epoch, train_loss, val.loss, val.bleu["bleu4"])
            progress.epoch = epoch
            progress.history.append(log)
            if log.val_bleu4 > progress.best_bleu:
                progress.best_bleu, progress.best_epoch, progress.stale = log.val_bleu4, epoch, 0
                if leader:
                    save_checkpoint(checkpoint_path, model, epoch, log.val_bleu4)
            else:
                progress.stale += 1
            if leader:
                if state_file is not None:
                    save_state(state_file, model, optimizer, progress, shuffle)
                on_epoch(log)
                tqdm.write(f"epoch {epoch}: train loss {log.train_loss:.3f}, val loss "
                           f"{val.loss:.3f}, val BLEU-4 {log.val_bleu4:.2f}")
    return TrainResult(progress.best_epoch, progress.best_bleu, progress.epoch,
                       stopped_early=progress.stale >= settings.patience)
