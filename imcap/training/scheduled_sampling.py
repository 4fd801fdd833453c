"""Scheduled sampling (Bengio et al. 2015; ImageCaptioning.pytorch's `scheduled_sampling_start`,
`_increase_every`, `_increase_prob`, `_max_prob`): the probability of feeding the decoder its own
previous word instead of the true one grows over the epochs, so that it learns to continue from
its own mistakes once it makes few. Off (`train.scheduled_sampling: false`), every epoch feeds
the true word with the constant probability `train.teacher_forcing`.

On, the probability of the model's own word in epoch e (1, 2, ...) starts at
1 − `teacher_forcing` and, after `scheduled_sampling_start` epochs, grows by
`scheduled_sampling_increase_prob` every `scheduled_sampling_increase_every` epochs, up to
`scheduled_sampling_max_prob`. It is a function of the epoch number alone, so a resumed run
continues the schedule where it stopped."""

from __future__ import annotations

from imcap.training.params import TrainParams


def own_word_probability(train: TrainParams, epoch: int) -> float:
    """The probability of feeding the model's own previous word in `epoch` (1-based)."""
    base = 1.0 - train.teacher_forcing
    if not train.scheduled_sampling:
        return base
    steps = max(0, epoch - 1 - train.scheduled_sampling_start) \
        // train.scheduled_sampling_increase_every
    return min(train.scheduled_sampling_max_prob,
               base + steps * train.scheduled_sampling_increase_prob)


def teacher_forcing_at(train: TrainParams, epoch: int) -> float:
    """The probability of feeding the true previous word in `epoch`: `train.teacher_forcing`
    itself, unchanged, without scheduled sampling."""
    if not train.scheduled_sampling:
        return train.teacher_forcing
    return 1.0 - own_word_probability(train, epoch)
