"""Resume state: an interrupted training continues to exactly the uninterrupted result and says
so; the state directory belongs to one fingerprint (params, inputs, code, library versions,
processes), and a state of another fingerprint, or one that cannot be read or does not fit the
model, starts over, saying why."""

import dataclasses
from importlib.metadata import version

import pytest
import torch
from params_overrides import cpu_training
from test_training import EMBEDDINGS, VOCAB, _split

from imcap.model.decoder import DecoderConfig
from imcap.params import repo_params
from imcap.stage_code import third_party_imports
from imcap.training.loop import train_decoder
from imcap.training.resume import (
    FINGERPRINT_FILE,
    STATE_FILE,
    Fingerprint,
    claim_state_dir,
    fingerprint,
)

# Dropout and teacher forcing < 1 draw from the global RNG: resuming must restore it.
CONFIG = DecoderConfig(vocab_size=len(VOCAB), embed_dim=8, encoder_channels=8,
                       projection_size=16, hidden_size=16, attention="I", attention_size=8,
                       dropout=0.3)
SETTINGS = cpu_training(epochs=4, teacher_forcing=0.7)
UPDOWN = dataclasses.replace(CONFIG, decoder="updown")


class Killed(Exception):
    pass


def _train(state_dir, checkpoint, on_epoch, config=CONFIG, settings=SETTINGS):
    return train_decoder(config, settings, EMBEDDINGS, _split(64, 0), _split(16, 1), VOCAB,
                         checkpoint, seed=5, on_epoch=on_epoch, state_dir=state_dir)


def _die_after_epoch(epoch):
    def on_epoch(log):
        if log.epoch == epoch:
            raise Killed
    return on_epoch


def _weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


SCHEDULED_SAMPLING = {"lr_schedule": "constant", "scheduled_sampling": True,
                      "scheduled_sampling_start": 1, "scheduled_sampling_increase_every": 1,
                      "scheduled_sampling_increase_prob": 0.2, "scheduled_sampling_max_prob": 0.8}


@pytest.mark.parametrize(("schedule", "config"), [("constant", CONFIG), ("plateau", CONFIG),
                                                  ("scheduled sampling", CONFIG),
                                                  ("constant", UPDOWN)],
                         ids=["constant", "plateau", "scheduled sampling", "updown"])
def test_an_interrupted_training_resumes_to_the_same_result(tmp_path, capsys, schedule, config):
    """`plateau`: the learning-rate scheduler's state (its best score, its stale epochs) is in
    the resume state too; scheduled sampling continues at the epoch it stopped (the model's own
    words 0.2 and 0.4 of the time in epochs 3 and 4, trained again after the resume)."""
    settings = SETTINGS.model_copy(update=SCHEDULED_SAMPLING if schedule == "scheduled sampling"
                                   else {"lr_schedule": schedule, "lr_decay_every": 1})
    straight = []
    expected = _train(tmp_path / "a", tmp_path / "a.pt", straight.append, config, settings)

    with pytest.raises(Killed):
        _train(tmp_path / "b", tmp_path / "b.pt", _die_after_epoch(2), config, settings)
    assert (tmp_path / "b" / STATE_FILE).is_file()
    capsys.readouterr()
    resumed = []
    result = _train(tmp_path / "b", tmp_path / "b.pt", resumed.append, config, settings)
    state = tmp_path / "b" / STATE_FILE
    assert (f"resuming at epoch 3 of 4 from {state} (to start over: rm -rf {tmp_path / 'b'})"
            in capsys.readouterr().out.splitlines())
    assert resumed == straight  # epochs 1-2 replayed from the state, 3-4 trained again
    assert result == expected
    a, b = _weights(tmp_path / "a.pt"), _weights(tmp_path / "b.pt")
    assert all(torch.equal(a[key], b[key]) for key in a)


@pytest.mark.parametrize("fault", ["unreadable", "another model"])
def test_a_state_it_cannot_use_starts_over_saying_why(tmp_path, capsys, fault):
    """A truncated state, or one of another model (a layer changed: unexpected keys), is a
    fresh start, never a traceback, exactly like a run that found no state."""
    settings = cpu_training(epochs=2, teacher_forcing=0.7)
    with pytest.raises(Killed):
        _train(tmp_path / "state", tmp_path / "a.pt", _die_after_epoch(1), settings=settings)
    state = tmp_path / "state" / STATE_FILE
    config = CONFIG
    if fault == "unreadable":
        state.write_bytes(state.read_bytes()[:1000])
    else:
        config = dataclasses.replace(CONFIG, attention="II")
    capsys.readouterr()
    logs, fresh = [], []
    result = _train(tmp_path / "state", tmp_path / "a.pt", logs.append, config, settings)
    why = {"unreadable": "is unreadable", "another model": "does not fit this run"}[fault]
    assert capsys.readouterr().out.startswith(f"starting over: {state} {why} (")
    assert result == _train(None, tmp_path / "b.pt", fresh.append, config, settings)
    assert logs == fresh and len(logs) == 2
    a, b = _weights(tmp_path / "a.pt"), _weights(tmp_path / "b.pt")
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_the_gpu_out_of_memory_while_resuming_keeps_the_state(tmp_path, monkeypatch):
    """Not "starting over" (which throws the finished epochs away): the error, and the state
    as it was, to resume once the GPU has room."""
    with pytest.raises(Killed):
        _train(tmp_path / "state", tmp_path / "a.pt", _die_after_epoch(2))
    state = tmp_path / "state" / STATE_FILE
    saved = state.read_bytes()

    load_state_dict, calls = torch.nn.Module.load_state_dict, []

    def no_memory_once(self: torch.nn.Module, *args: object, **kwargs: object) -> object:
        calls.append(self)
        if len(calls) == 1:  # the state's weights into the model; later ones have room
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB.")
        return load_state_dict(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "load_state_dict", no_memory_once)
    with pytest.raises(torch.OutOfMemoryError):
        _train(tmp_path / "state", tmp_path / "a.pt", lambda log: None)
    assert state.read_bytes() == saved


KEY = Fingerprint(params={"model.dropout": 0.3}, inputs={"data/vocab/vocab.json": [10, 1]},
                  code={"imcap/model/decoder.py": "aa", "stages/train.py": "bb"},
                  libraries={"torch": "2.5.1", "numpy": "2.1.0"}, processes=1)


@pytest.mark.parametrize(("change", "why"), [
    ({"code": {**KEY.code, "imcap/model/decoder.py": "ab"}},
     "code changed (imcap/model/decoder.py)"),
    ({"libraries": {**KEY.libraries, "torch": "2.6.0"}}, "torch version changed (2.5.1 → 2.6.0)"),
    ({"params": {"model.dropout": 0.5}}, "params changed (model.dropout 0.3 → 0.5)"),
    ({"inputs": {"data/vocab/vocab.json": [10, 2]}}, "inputs changed (data/vocab/vocab.json)"),
    ({"processes": 2}, "processes changed (1 → 2)"),
])
def test_another_fingerprint_starts_over_saying_why(tmp_path, change, why):
    state = tmp_path / "train"
    assert claim_state_dir(state, KEY) is None  # nothing there: nothing to say
    (state / STATE_FILE).write_text("state")
    assert claim_state_dir(state, KEY) is None
    assert (state / STATE_FILE).read_text() == "state"  # kept for its own fingerprint
    assert (claim_state_dir(state, dataclasses.replace(KEY, **change))
            == f"starting over: {why} since the state in {state} was saved")
    assert not (state / STATE_FILE).exists()


def test_a_state_without_a_fingerprint_starts_over(tmp_path):
    state = tmp_path / "train"  # as an imcap before fingerprint.json left it
    state.mkdir()
    (state / "fingerprint.txt").write_text("0123")
    (state / STATE_FILE).write_text("state")
    assert "no fingerprint" in claim_state_dir(state, KEY)
    assert (state / FINGERPRINT_FILE).is_file() and not (state / STATE_FILE).exists()


# What the train stage imports that cannot change what it computes: tracking, the CSV of the
# epoch logs, params parsing, progress bars.
# open_clip: CLIP encoders are never fine-tuned (refused at check), so train never builds one
NO_RESULT_LIBRARIES = {"mlflow", "pandas", "pydantic", "pydantic_core", "tqdm", "yaml",
                       "open_clip"}


def test_the_fingerprint_holds_the_code_and_the_libraries_that_change_results(tmp_path):
    (tmp_path / "input").write_text("x")
    key = fingerprint({"seed": 1}, [tmp_path / "input"], {"stages/train.py": "aa"}, 2)
    assert key.code == {"stages/train.py": "aa"} and key.processes == 2
    assert key.libraries["torch"] == torch.__version__
    assert key.libraries["nltk"] == version("nltk") and key.libraries["h5py"] == version("h5py")
    assert {"python", "numpy", "cuda"} <= key.libraries.keys()
    # every library the stage imports is either in the fingerprint or can change no result
    assert third_party_imports("stages.train") <= key.libraries.keys() | NO_RESULT_LIBRARIES


def test_speed_only_params_keep_the_resume_state(tmp_path):
    """`-S train.num_workers=4` on a killed run resumes it: the fingerprint holds only the
    params that can change a result (tests/test_training_data.py proves these cannot)."""
    (tmp_path / "input").write_text("x")

    def key(**overrides):
        return fingerprint(repo_params(**overrides).trained_params(), [tmp_path / "input"], {})

    state = tmp_path / "train"
    claim_state_dir(state, key())
    (state / STATE_FILE).write_text("state")
    assert claim_state_dir(state, key(**{"train.num_workers": 4,
                                         "train.features_in_memory_gb": 0.0})) is None
    assert (state / STATE_FILE).read_text() == "state"
    assert "params changed (train.image_window" in claim_state_dir(
        state, key(**{"train.image_window": 7}))
