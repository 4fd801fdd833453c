"""The self-critical epochs (`train.scst_epochs`), after the cross-entropy ones. One epoch:
every training image once, in batches of `train.scst_batch_size` images shuffled by the
training's generator, each batch a REINFORCE step on the reward of `train.scst_samples`
captions drawn per image (`imcap.training.scst`).

The reward's references are the training split's encoded captions (their CIDEr-D document
frequencies counted once, `reward_of`). Under DistributedDataParallel each rank samples for its
contiguous share of every batch's images, and its loss is scaled by its share of the batch's
drawn tokens × the number of ranks: DDP's mean of the ranks' gradients is then the gradient of
the mean over all the batch's tokens, as one process computes it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from imcap.data.vocab import Vocabulary
from imcap.distributed import Shard
from imcap.evaluation.split_evaluation import evaluate_split
from imcap.features.splits import CaptionedSplit
from imcap.model.checkpoint import save_checkpoint
from imcap.progress import progress_bar
from imcap.training.cider_reward import CaptionReward
from imcap.training.config import TrainParams
from imcap.training.epoch import autocast
from imcap.training.resume import EpochLog, Progress
from imcap.training.scst import self_critical_batch


def reward_of(split: CaptionedSplit, vocab_size: int, device: torch.device) -> CaptionReward:
    """CIDEr-D (+ BLEU-4) against `split`'s references: image i is row i of its features."""
    return CaptionReward.from_references(split.captions, split.image_row, vocab_size,
                                         device=device)


def image_batches(images: int, batch_size: int, generator: torch.Generator,
                  world_size: int) -> list[torch.Tensor]:
    """Rows 0 .. images-1 shuffled and cut into batches of `batch_size`; a last batch of fewer
    images than ranks joins the one before it, so every rank gets at least one."""
    batches = list(torch.randperm(images, generator=generator).split(batch_size))
    if len(batches) > 1 and len(batches[-1]) < world_size:
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches


def self_critical_epoch(model: nn.Module, optimizer: torch.optim.Optimizer,
                        split: CaptionedSplit, reward: CaptionReward, settings: TrainParams,
                        generator: torch.Generator, shard: Shard, device: torch.device,
                        dtype: torch.dtype, progress: str = "") -> tuple[float, float]:
    """Train `model` (the decoder or its DDP wrapper) for one epoch; the mean reward of the
    drawn captions and the mean of their baseline (all ranks)."""
    model.train()
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # reward, baseline, images
    batches = image_batches(len(split.pooled), settings.scst_batch_size, generator,
                            shard.world_size)
    for rows in progress_bar(batches, desc=progress, unit="batch", disable=not progress):
        mine = rows[slice(*shard.bounds(len(rows)))]
        with autocast(device, dtype):
            batch = self_critical_batch(
                model, split.grid[mine].to(device), split.pooled[mine].to(device),
                mine.to(device), reward, samples=settings.scst_samples,
                baseline=settings.scst_baseline, max_length=settings.max_length,
                bleu_weight=settings.scst_bleu_weight)
        loss = batch.loss
        if shard.world_size > 1:  # this rank's share of the batch's tokens, × ranks
            tokens = batch.tokens.clone().float()
            dist.all_reduce(tokens)
            loss = loss * (batch.tokens * shard.world_size / tokens)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
        sums += torch.stack([batch.reward.double() * len(mine),
                             batch.baseline.double() * len(mine),
                             torch.tensor(len(mine), dtype=torch.float64, device=device)])
    if shard.world_size > 1:
        dist.all_reduce(sums)
    reward_mean, baseline_mean = (sums[:2] / sums[2]).tolist()
    return reward_mean, baseline_mean


def train_self_critical(model: nn.Module, trained: nn.Module, optimizer: torch.optim.Optimizer,
                        settings: TrainParams, train_data: CaptionedSplit,
                        val_data: CaptionedSplit, vocab: Vocabulary, checkpoint_path: Path,
                        progress: Progress, *, device: torch.device, dtype: torch.dtype,
                        save: Callable[[Progress, EpochLog | None], Progress],
                        generator: torch.Generator, shard: Shard) -> Progress:
    """The self-critical epochs not yet run, numbered on from the cross-entropy ones; after
    each, rank 0 validates and publishes the weights at `checkpoint_path`, and `save` ends the
    epoch (`end_epoch`)."""
    reward = reward_of(train_data, len(vocab), device)
    for step in range(progress.scst_epoch + 1, settings.scst_epochs + 1):
        epoch = progress.epoch + step
        rewards = self_critical_epoch(
            trained, optimizer, train_data, reward, settings, generator, shard, device, dtype,
            progress=f"self-critical epoch {step}/{settings.scst_epochs}" if not shard.rank
            else "")
        log = None
        if shard.rank == 0:
            val = evaluate_split(model, val_data, vocab, device, settings.max_length)
            log = EpochLog(epoch, None, val.loss, val.bleu["bleu4"], *rewards)
            progress.scst_epoch = step
            progress.history.append(log)
            save_checkpoint(checkpoint_path, model, epoch, log.val_bleu4)
        progress = save(progress, log)
    return progress
