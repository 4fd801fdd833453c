"""The learning rate of each epoch (imcap.training.schedule): a torch.optim.lr_scheduler
stepped after each epoch with its validation BLEU-4, whose state a resumed run restores."""

import pytest
import torch
from params_overrides import cpu_training

from imcap.training.resume import EpochLog
from imcap.training.schedule import EpochSchedule


def _optimizer():
    return torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)


def _rates(epochs, resume_after=None, **settings):
    """Each epoch's rate; with `resume_after`, the schedule is saved after that epoch and the
    rest run on a new optimizer and schedule restored from it, as a resumed run does."""
    scores = settings.pop("scores", [0.0] * epochs)
    train = cpu_training(learning_rate=1.0, epochs=epochs, **settings)
    optimizer = _optimizer()
    schedule = EpochSchedule(optimizer, train)
    rates = []
    for epoch, score in enumerate(scores, start=1):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # the epoch's steps
        schedule.step(EpochLog(epoch, 1.0, 1.0, score))
        if epoch == resume_after:
            saved = optimizer.state_dict(), schedule.state_dict()
            optimizer = _optimizer()
            schedule = EpochSchedule(optimizer, train)
            optimizer.load_state_dict(saved[0])
            schedule.load_state_dict(saved[1])
    return rates


def test_constant():
    assert _rates(4, lr_schedule="constant") == [1.0] * 4


def test_step_decays_every_few_epochs_after_the_start():
    assert _rates(7, lr_schedule="step", lr_decay=0.5, lr_decay_every=3,
                  lr_decay_start=0) == [1, 1, 1, 0.5, 0.5, 0.5, 0.25]
    assert _rates(7, lr_schedule="step", lr_decay=0.5, lr_decay_every=2,
                  lr_decay_start=3) == [1, 1, 1, 1, 1, 0.5, 0.5]


def test_cosine_reaches_zero_after_the_last_epoch():
    rates = _rates(5, lr_schedule="cosine", lr_decay_start=1)
    assert rates[:2] == [1.0, 1.0]  # the first epoch at the full rate, then the cosine
    assert rates[2:] == pytest.approx([0.8536, 0.5, 0.1464], abs=1e-4)


def test_plateau_decays_after_stale_epochs_and_counts_again():
    scores = [10, 12, 11, 11, 13, 12, 12, 12, 12]
    rates = _rates(9, lr_schedule="plateau", lr_decay=0.5, lr_decay_every=2,
                   lr_decay_start=0, scores=scores)
    # epochs 3-4 stale: epoch 5 at half; 6-7 stale: epoch 8 at a quarter; 8-9 stale again
    assert rates == [1, 1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25]
    assert _rates(9, lr_schedule="plateau", lr_decay=0.5, lr_decay_every=2, lr_decay_start=4,
                  scores=scores)[:7] == [1] * 7  # stale epochs 3-4 come before the start


@pytest.mark.parametrize("schedule", ["step", "plateau", "cosine"])
def test_a_resumed_schedule_sets_the_rates_of_the_uninterrupted_one(schedule):
    settings = dict(lr_schedule=schedule, lr_decay=0.5, lr_decay_every=2, lr_decay_start=1,
                    scores=[10, 12, 11, 11, 13, 12, 12, 12, 12])
    assert _rates(9, resume_after=4, **dict(settings)) == _rates(9, **dict(settings))
