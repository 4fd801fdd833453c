"""Self-critical sequence training (Rennie et al., CVPR 2017) for one batch of images.

The decoder draws n captions per image (`imcap.model.decode.sample_decode`), each is scored by
the reward r (CIDEr-D, optionally + a weight × BLEU-4, against the image's training references:
`imcap.training.cider_reward`), and the loss is REINFORCE with a baseline b:

    loss = −mean over the drawn tokens (words and EOS) of (r(w^s) − b) · log p(w^s_t)

- baseline `greedy`: b = the reward of the image's greedy caption (decoded in eval mode, without
  gradients), the original self-critical baseline;
- baseline `mean`: b = the mean reward of the image's n − 1 other samples ("new self-critical",
  ruotianluo's ImageCaptioning.pytorch), which needs n >= 2 and no greedy decoding.
The reward never carries gradients. Everything stays on the device except the one copy of the
sampled tokens `caption_logprobs` makes for the time loop's lengths.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from imcap.data.vocab import PAD_ID
from imcap.model.decode import greedy_decode, sample_decode
from imcap.model.sample import caption_logprobs
from imcap.training.cider_reward import CaptionReward
from imcap.training.config import SCST_BASELINES as BASELINES


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
