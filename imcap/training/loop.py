"""Training the decoder: teacher forcing, Adam, gradient clipping, best-by-validation-BLEU-4
checkpoint, early stopping. Seeded and repeatable on CPU."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from imcap.data.vocab import Vocabulary
from imcap.devices import pick_device
from imcap.evaluation.split_evaluation import evaluate_split
from imcap.features.splits import CaptionedSplit
from imcap.model.checkpoint import save_checkpoint
from imcap.model.decoder import CaptionDecoder, DecoderConfig
from imcap.model.loss import caption_loss
from imcap.training.config import TrainParams


@dataclass(frozen=True)
class EpochLog:
    epoch: int
    train_loss: float
    val_loss: float
    val_bleu4: float


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
    torch.use_deterministic_algorithms(True, warn_only=True)


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
) -> TrainResult:
    """Train, keeping the checkpoint with the best validation BLEU-4 at `checkpoint_path`."""
    seed_everything(seed)
    device = pick_device(settings.device)
    model = CaptionDecoder(config, embeddings, settings.freeze_embeddings).to(device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad],
                                 lr=settings.learning_rate)
    shuffle = torch.Generator().manual_seed(seed)
    best_bleu, best_epoch, stale, epoch = -1.0, 0, 0, 0
    for epoch in range(1, settings.epochs + 1):
        model.train()
        total, count = 0.0, 0
        order = torch.randperm(len(train_data.captions), generator=shuffle)
        bar = tqdm(order.split(settings.batch_size), desc=f"epoch {epoch}/{settings.epochs}",
                   unit="batch")
        for rows in bar:
            loss = caption_loss(model, train_data, rows, device, settings.teacher_forcing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            optimizer.step()
            total, count = total + loss.item() * len(rows), count + len(rows)
            bar.set_postfix(loss=f"{total / count:.3f}")
        val = evaluate_split(model, val_data, vocab, device, settings.max_length)
        log = EpochLog(epoch, total / count, val.loss, val.bleu["bleu4"])
        on_epoch(log)
        tqdm.write(f"epoch {epoch}: train loss {log.train_loss:.3f}, val loss {val.loss:.3f}, "
                   f"val BLEU-4 {log.val_bleu4:.2f}")
        if log.val_bleu4 > best_bleu:
            best_bleu, best_epoch, stale = log.val_bleu4, epoch, 0
            save_checkpoint(checkpoint_path, model, epoch, log.val_bleu4)
        else:
            stale += 1
            if stale >= settings.patience:
                return TrainResult(best_epoch, best_bleu, epoch, stopped_early=True)
    return TrainResult(best_epoch, best_bleu, epoch, stopped_early=False)
