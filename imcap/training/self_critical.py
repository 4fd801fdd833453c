"""Self-critical sequence training (Rennie et al., CVPR 2017): the epochs after the
cross-entropy ones (`train.scst_epochs`), from the published cross-entropy model.

One batch (`self_critical_batch`): the decoder draws n captions per image
(`imcap.model.decode.sample_decode`), each is scored by the reward r (CIDEr-D, optionally + a
weight × BLEU-4, against the image's training references: `imcap.training.cider_reward`), and
the loss is REINFORCE with a baseline b:

    loss = −mean over the drawn tokens (words and EOS) of (r(w^s) − b) · log p(w^s_t)

- baseline `greedy`: b = the reward of the image's greedy caption (decoded in eval mode, without
  gradients), the original self-critical baseline;
- baseline `mean`: b = the mean reward of the image's n − 1 other samples ("new self-critical",
  ruotianluo's ImageCaptioning.pytorch), which needs n >= 2 and no greedy decoding.
The reward never carries gradients. Everything stays on the device except the one copy of the
sampled tokens `caption_logprobs` makes for the time loop's lengths.

One epoch (`self_critical_epoch`): every training image once, in batches of
`train.scst_batch_size` images shuffled by the training's generator, their features read ahead
as the cross-entropy epochs' are (`train.num_workers`, `imcap.training.batches.image_loader`).
The reward's references are the training split's encoded captions (their CIDEr-D document
frequencies counted once, `reward_of`). Under DistributedDataParallel each rank samples for its
contiguous share of every batch's images, and its loss is scaled by its share of the batch's
drawn tokens × the number of ranks: DDP's mean of the ranks' gradients is then the gradient of
the mean over all the batch's tokens, as one process computes it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import nn

from imcap.data.vocab import PAD_ID
from imcap.distributed import Shard, broadcast_weights
from imcap.evaluation.split_evaluation import SplitEvaluation
from imcap.features.splits import CaptionedSplit
from imcap.model.checkpoint import load_weights, save_checkpoint
from imcap.model.decode import greedy_decode, sample_decode
from imcap.model.sample import caption_logprobs
from imcap.progress import progress_bar
from imcap.training.batches import image_loader
from imcap.training.cider_reward import CaptionReward
from imcap.training.driver import EpochDriver
from imcap.training.epoch import autocast
from imcap.training.params import SCST_BASELINES as BASELINES
from imcap.training.params import TrainParams
from imcap.training.resume import EpochLog, Progress


class SelfCriticalBatch(NamedTuple):
    loss: torch.Tensor  # [] to backpropagate
    reward: torch.Tensor  # [] mean reward of the samples (detached)
    baseline: torch.Tensor  # [] mean baseline (detached)
    tokens: torch.Tensor  # [] how many tokens were drawn (words and EOS): the loss's denominator


def self_critical_loss(logprobs: torch.Tensor, mask: torch.Tensor, reward: torch.Tensor,
                       baseline: torch.Tensor) -> torch.Tensor:
    """−mean over the tokens `mask` [S, L] marks of (reward − baseline) [S] · `logprobs`
    [S, L]."""
    advantage = (reward - baseline).detach().to(logprobs.dtype).unsqueeze(1)
    return -(advantage * logprobs * mask).sum() / mask.sum().clamp(min=1)


def mean_of_others(reward: torch.Tensor, n: int) -> torch.Tensor:
    """For rewards [B·n] (n per image, consecutive): each one's mean of its image's n − 1
    others."""
    if n < 2:
        raise ValueError("the mean baseline needs at least 2 samples per image")
    per_image = reward.view(-1, n)
    return ((per_image.sum(dim=1, keepdim=True) - per_image) / (n - 1)).flatten()


def self_critical_batch(model: nn.Module, grid: torch.Tensor, pooled: torch.Tensor,
                        images: torch.Tensor, reward: CaptionReward, *, samples: int,
                        baseline: str, max_length: int, bleu_weight: float = 0.0,
                        generator: torch.Generator | None = None) -> SelfCriticalBatch:
    """The self-critical loss of the B images `grid` [B, R, C] / `pooled` [B, C], which are
    images `images` [B] of `reward`'s references (for the training split: rows of the split).

    `model` is what training calls (the decoder, or its `DistributedDataParallel` wrapper, whose
    `module` then decodes), in its current mode (dropout on when training); the greedy baseline
    decodes in eval mode, without gradients. The captions are drawn without gradients; their
    log-probabilities come from one teacher-forced `forward` through `model` over them
    (`caption_logprobs`: what DistributedDataParallel syncs the gradients of; with dropout,
    the forward's masks are not the sampling's)."""
    if baseline not in BASELINES:
        raise ValueError(f"unknown baseline {baseline!r}; valid: {', '.join(BASELINES)}")
    decoder = getattr(model, "module", model)
    drawn, _ = sample_decode(decoder, grid, pooled, max_length, n=samples, generator=generator)
    mask = drawn != PAD_ID
    owner = torch.arange(len(images), device=grid.device).repeat_interleave(samples)
    with torch.no_grad():
        scores = reward(drawn, images[owner], bleu_weight)
        if baseline == "mean":
            base = mean_of_others(scores, samples)
        else:
            was_training = decoder.training
            decoder.eval()
            try:
                greedy, _ = greedy_decode(decoder, grid, pooled, max_length)
            finally:
                decoder.train(was_training)
            base = reward(greedy, images, bleu_weight)[owner]
    logprobs = caption_logprobs(model, grid, pooled, drawn, owner)
    loss = self_critical_loss(logprobs, mask, scores, base)
    return SelfCriticalBatch(loss, scores.mean(), base.mean(), mask.sum())


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
    read = image_loader(split, batches, shard, device, settings.num_workers)
    for mine, grid, pooled in progress_bar(read, total=len(batches), desc=progress,
                                           unit="batch", disable=not progress):
        with autocast(device, dtype):
            batch = self_critical_batch(
                model, grid, pooled, mine, reward, samples=settings.scst_samples,
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


def self_critical_phase(driver: EpochDriver, optimizer: torch.optim.Optimizer,
                        progress: Progress, published: tuple[int, float, float | None]
                        ) -> Progress:
    """The self-critical epochs not yet run, numbered on from the cross-entropy ones, from the
    `published` cross-entropy model at the checkpoint path (the same weights on every rank);
    after each, rank 0 validates and publishes the weights at the checkpoint path."""
    settings, shard, device = driver.settings, driver.shard, driver.device
    if not progress.scst_epoch:
        if driver.leader:
            load_weights(driver.model, driver.checkpoint_path, device)
        broadcast_weights(driver.model, shard)
        progress.published = published
    reward = reward_of(driver.train_data, len(driver.vocab), device)
    cross_entropy_epochs = progress.epoch

    def train(epoch: int) -> tuple[float, float]:
        step = epoch - cross_entropy_epochs
        return self_critical_epoch(
            driver.trained, optimizer, driver.train_data, reward, settings, driver.shuffle,
            shard, device, driver.dtype,
            progress=f"self-critical epoch {step}/{settings.scst_epochs}" if driver.leader
            else "")

    def record(progress: Progress, epoch: int, rewards: tuple[float, float],
               val: SplitEvaluation) -> EpochLog:
        log = EpochLog(epoch, None, val.loss, val.bleu["bleu4"], *rewards)
        progress.scst_epoch = epoch - cross_entropy_epochs
        progress.history.append(log)
        save_checkpoint(driver.checkpoint_path, driver.model, epoch, log.val_bleu4)
        return log

    return driver.run(progress, range(cross_entropy_epochs + progress.scst_epoch + 1,
                                      cross_entropy_epochs + settings.scst_epochs + 1),
                      train, record)
