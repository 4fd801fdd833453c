"""One pass over the training batches: forward, backward, clip, step, with no host sync.

The loss of a batch is its summed word loss over the words of the *global* batch (all ranks),
times the number of ranks: DistributedDataParallel averages gradients over ranks, so each step
follows the gradient of the mean word loss of the global batch, exactly as one process would.
The epoch's loss is summed on the device and read once, at the end.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from contextlib import nullcontext

import torch
import torch.distributed as dist
from torch import nn

from imcap.model.loss import summed_word_loss
from imcap.progress import progress_bar
from imcap.training.batches import Batch


class DivergedError(ArithmeticError):
    """The training loss is no longer a finite number: the message names the epoch and what
    to change."""


def check_finite(loss: float, epoch: int, learning_rate: float) -> None:
    """`DivergedError` unless `loss`, the mean training loss of `epoch`, is finite: before a
    model that can only caption nonsense is validated, saved or published."""
    if not math.isfinite(loss):
        raise DivergedError(f"epoch {epoch}: the training loss is {loss}: training diverged, "
                            f"most likely from a learning rate too high for this model "
                            f"({learning_rate:g}); lower train.learning_rate (or "
                            "train.grad_clip) and rerun")


def autocast(device: torch.device, dtype: torch.dtype) -> torch.autocast | nullcontext:
    """Mixed precision in `dtype` on `device`, or nothing for float32."""
    if dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, batches: Iterable[Batch],
                *, grad_clip: float, teacher_forcing: float, dtype: torch.dtype,
                device: torch.device, world_size: int = 1, progress: str = "",
                label_smoothing: float = 0.0, attention_regularization: float = 0.0) -> float:
    """Train on `batches` (already on `device`); the mean word loss of the epoch (all ranks):
    the objective minimised, label smoothing and attention regularisation included."""
    model.train()
    total = torch.zeros((), device=device)
    words = torch.zeros((), device=device)
    for batch in progress_bar(batches, desc=progress, unit="batch", disable=not progress):
        with autocast(device, dtype):
            summed = summed_word_loss(model, batch.grid, batch.pooled, batch.captions,
                                      teacher_forcing, label_smoothing=label_smoothing,
                                      attention_regularization=attention_regularization)
        optimizer.zero_grad(set_to_none=True)
        (summed * (world_size / batch.global_words)).backward()
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        total += summed.detach()
        words += len(batch.captions.targets)
    if world_size > 1:
        both = torch.stack([total, words])
        dist.all_reduce(both)
        total, words = both[0], both[1]
    return (total / words).item()
