"""Scheduled sampling (imcap.training.scheduled_sampling): the probability of feeding the model's
own word per epoch, the constant `train.teacher_forcing` untouched when it is off, and its params
refused in one line at `check`."""

from __future__ import annotations

import pytest
from params_overrides import cpu_training, merged

from imcap.params import ParamError, parse_params
from imcap.training.scheduled_sampling import own_word_probability, teacher_forcing_at

SCHEDULE = {"scheduled_sampling": True, "scheduled_sampling_start": 2,
            "scheduled_sampling_increase_every": 3, "scheduled_sampling_increase_prob": 0.1,
            "scheduled_sampling_max_prob": 0.25}


def test_the_probability_grows_every_few_epochs_after_the_start_up_to_the_most():
    train = cpu_training(teacher_forcing=1.0, **SCHEDULE)
    own = [own_word_probability(train, epoch) for epoch in range(1, 14)]
    assert own == pytest.approx([0.0] * 5 + [0.1] * 3 + [0.2] * 3 + [0.25] * 2)
    assert [teacher_forcing_at(train, e) for e in (1, 6, 13)] == pytest.approx([1.0, 0.9, 0.75])


def test_it_starts_from_the_constant_teacher_forcing():
    train = cpu_training(teacher_forcing=0.9, **SCHEDULE)
    assert [own_word_probability(train, e) for e in (1, 6, 9)] == pytest.approx([0.1, 0.2, 0.25])


def test_off_every_epoch_feeds_the_constant_teacher_forcing_as_it_is():
    train = cpu_training(teacher_forcing=0.9, **SCHEDULE | {"scheduled_sampling": False})
    assert {teacher_forcing_at(train, epoch) for epoch in range(1, 40)} == {0.9}


@pytest.mark.parametrize(("raw", "message"), [
    ({"train": {"scheduled_sampling_start": -1}},
     r"train\.scheduled_sampling_start must be >= 0, got -1"),
    ({"train": {"scheduled_sampling_increase_every": 0}},
     r"train\.scheduled_sampling_increase_every must be > 0, got 0"),
    ({"train": {"scheduled_sampling_increase_prob": 1.5}},
     r"train\.scheduled_sampling_increase_prob must be <= 1\.0, got 1\.5"),
    ({"train": {"scheduled_sampling_max_prob": -0.1}},
     r"train\.scheduled_sampling_max_prob must be >= 0\.0, got -0\.1"),
    ({"train": {"scheduled_sampling": True, "teacher_forcing": 0.5,
                "scheduled_sampling_max_prob": 0.25}},
     r"train\.scheduled_sampling_max_prob \(0\.25\) is below the probability the schedule "
     r"starts from, 1 - train\.teacher_forcing \(0\.5\); raise it or train\.teacher_forcing"),
    ({"decoder": "transformer", "train": {"scheduled_sampling": True}},
     r"train\.scheduled_sampling needs decoder lstm .*; set it to false"),
])
def test_bad_schedules_are_refused_in_one_line(raw, message):
    with pytest.raises(ParamError, match=message) as err:
        parse_params(merged({"decoder": "lstm", **raw}))  # the LSTM's option, unless set
    assert "\n" not in str(err.value)
    parse_params(merged({"decoder": "lstm", "train": SCHEDULE}))


def test_the_schedule_reaches_the_model_epoch_by_epoch(tmp_path):
    """Epoch 1 of the schedule is teacher-forced, as training without it (the same loss, same
    seed); from epoch 2 the model is fed its own words half the time: another loss."""
    from test_training import CONFIG, EMBEDDINGS, VOCAB, _split

    from imcap.training.loop import train_decoder

    losses = {}
    for on in (False, True):
        logs = []
        schedule = {"scheduled_sampling": on, "scheduled_sampling_start": 0,
                    "scheduled_sampling_increase_every": 1,
                    "scheduled_sampling_increase_prob": 0.5, "scheduled_sampling_max_prob": 0.5}
        train_decoder(CONFIG, cpu_training(epochs=2, learning_rate=0.01, patience=5, **schedule),
                      EMBEDDINGS, _split(64, 0), _split(16, 1), VOCAB, tmp_path / f"{on}.pt",
                      seed=0, on_epoch=logs.append)
        losses[on] = [log.train_loss for log in logs]
    assert losses[True][0] == losses[False][0]
    assert losses[True][1] != losses[False][1]
