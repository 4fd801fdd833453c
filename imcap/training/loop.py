"""Training the decoder: teacher forcing, Adam, gradient clipping, best-by-validation-BLEU-4
checkpoint, early stopping. Seeded and repeatable on CPU."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from imcap.atomic import atomic_path
from imcap.data.vocab import PAD_ID, Vocabulary
from imcap.evaluation.bleu import bleu_scores
from imcap.model.decode import greedy_decode
from imcap.model.decoder import CaptionDecoder, DecoderConfig


class Rows(Protocol):
    """Indexable by a tensor of row numbers, giving a CPU tensor: a tensor, or a lazy view."""

    def __len__(self) -> int: ...

    def __getitem__(self, rows: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class SplitFeatures:
    """Features of one split's images, with every caption of those images.

    `grid` and `pooled` are in-memory tensors or lazy views of the feature store
    (`imcap.features.store.StoreRows`) that read only the rows a batch indexes.
    """

    grid: Rows  # [N, R, C] (float16 or float32)
    pooled: Rows  # [N, C]
    captions: torch.Tensor  # [M, L] token ids
    owner: torch.Tensor  # [M] row in grid/pooled
    references: list[list[list[str]]]  # per image: all its reference captions (tokens)


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


def _batch_tokens(tokens: torch.Tensor) -> torch.Tensor:
    """Drop the all-PAD columns at the end, so steps match the longest caption in the batch."""
    width = int((tokens != PAD_ID).sum(dim=1).max())
    return tokens[:, :width]


def caption_loss(model: CaptionDecoder, data: SplitFeatures, rows: torch.Tensor,
                 device: torch.device, teacher_forcing: float = 1.0) -> torch.Tensor:
    tokens = _batch_tokens(data.captions[rows]).to(device)
    owner = data.owner[rows]
    logits = model(data.grid[owner].to(device), data.pooled[owner].to(device), tokens,
                   teacher_forcing)
    return nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)),
                                       tokens[:, 1:].reshape(-1), ignore_index=PAD_ID)


@torch.no_grad()
def evaluate_split(model: CaptionDecoder, data: SplitFeatures, vocab: Vocabulary,
                   device: torch.device, max_length: int, batch_size: int = 256
                   ) -> tuple[float, dict[str, float], list[list[str]]]:
    """Mean caption loss, BLEU scores of greedy captions, and the captions themselves."""
    model.eval()
    losses = []
    for rows in torch.arange(len(data.captions)).split(batch_size):
        losses.append(caption_loss(model, data, rows, device).item() * len(rows))
    hypotheses: list[list[str]] = []
    for rows in torch.arange(len(data.grid)).split(batch_size):
        ids, _ = greedy_decode(model, data.grid[rows].to(device), data.pooled[rows].to(device),
                               max_length)
        hypotheses.extend(vocab.decode(row) for row in ids.tolist())
    return (sum(losses) / len(data.captions), bleu_scores(data.references, hypotheses),
            hypotheses)


def train_decoder(
    config: DecoderConfig,
    embeddings: torch.Tensor,
    train_data: SplitFeatures,
    val_data: SplitFeatures,
    vocab: Vocabulary,
    checkpoint_path: Path,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    grad_clip: float,
    teacher_forcing: float,
    patience: int,
    max_length: int,
    seed: int,
    device: torch.device,
    freeze_embeddings: bool = False,
    on_epoch: Callable[[EpochLog], None] = lambda log: None,
) -> TrainResult:
    """Train, keeping the checkpoint with the best validation BLEU-4 at `checkpoint_path`."""
    seed_everything(seed)
    model = CaptionDecoder(config, embeddings, freeze_embeddings).to(device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad],
                                 lr=learning_rate)
    shuffle = torch.Generator().manual_seed(seed)
    best_bleu, best_epoch, stale, epoch = -1.0, 0, 0, 0
    for epoch in range(1, epochs + 1):
        model.train()
        total, count = 0.0, 0
        order = torch.randperm(len(train_data.captions), generator=shuffle)
        bar = tqdm(order.split(batch_size), desc=f"epoch {epoch}/{epochs}", unit="batch")
        for rows in bar:
            loss = caption_loss(model, train_data, rows, device, teacher_forcing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            total, count = total + loss.item() * len(rows), count + len(rows)
            bar.set_postfix(loss=f"{total / count:.3f}")
        val_loss, val_bleu, _ = evaluate_split(model, val_data, vocab, device, max_length)
        log = EpochLog(epoch, total / count, val_loss, val_bleu["bleu4"])
        on_epoch(log)
        tqdm.write(f"epoch {epoch}: train loss {log.train_loss:.3f}, val loss {val_loss:.3f}, "
                   f"val BLEU-4 {log.val_bleu4:.2f}")
        if log.val_bleu4 > best_bleu:
            best_bleu, best_epoch, stale = log.val_bleu4, epoch, 0
            save_checkpoint(checkpoint_path, model, epoch, log.val_bleu4)
        else:
            stale += 1
            if stale >= patience:
                return TrainResult(best_epoch, best_bleu, epoch, stopped_early=True)
    return TrainResult(best_epoch, best_bleu, epoch, stopped_early=False)


def save_checkpoint(path: Path, model: CaptionDecoder, epoch: int, val_bleu4: float) -> None:
    with atomic_path(path) as tmp:
        torch.save({"config": model.config.as_dict(), "state_dict": model.state_dict(),
                    "epoch": epoch, "val_bleu4": val_bleu4}, tmp)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> CaptionDecoder:
    checkpoint = torch.load(path, map_location=device, weights_only=True)
    model = CaptionDecoder(DecoderConfig(**checkpoint["config"]))
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval()
