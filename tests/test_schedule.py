"""The learning rate of each epoch (imcap.training.schedule): a function of the epoch and the
validation scores so far, so a resumed run sets the rate of the uninterrupted one."""

import pytest
from params_overrides import cpu_training

from imcap.training.resume import EpochLog
from imcap.training.schedule import learning_rate


def _rates(epochs, **settings):
    history = [EpochLog(e, 1.0, 1.0, score) for e, score in enumerate(
        settings.pop("scores", [0.0] * epochs), start=1)]
    train = cpu_training(learning_rate=1.0, epochs=epochs, **settings)
    return [learning_rate(train, epoch, history) for epoch in range(1, epochs + 1)]


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
