"""Resume state: an interrupted training continues to exactly the uninterrupted result, and
the state directory belongs to one fingerprint."""

import pytest
import torch
from params_overrides import cpu_training
from test_training import EMBEDDINGS, VOCAB, _split

from imcap.model.decoder import DecoderConfig
from imcap.training.loop import train_decoder
from imcap.training.resume import STATE_FILE, claim_state_dir

# Dropout and teacher forcing < 1 draw from the global RNG: resuming must restore it.
CONFIG = DecoderConfig(vocab_size=len(VOCAB), embed_dim=8, encoder_channels=8,
                       projection_size=16, hidden_size=16, attention="I", attention_size=8,
                       dropout=0.3)
SETTINGS = cpu_training(epochs=4, teacher_forcing=0.7)


class Killed(Exception):
    pass


def _train(state_dir, checkpoint, on_epoch):
    return train_decoder(CONFIG, SETTINGS, EMBEDDINGS, _split(64, 0), _split(16, 1), VOCAB,
                         checkpoint, seed=5, on_epoch=on_epoch, state_dir=state_dir)


def test_an_interrupted_training_resumes_to_the_same_result(tmp_path):
    straight = []
    expected = _train(tmp_path / "a", tmp_path / "a.pt", straight.append)

    def die_after_epoch_2(log):
        if log.epoch == 2:
            raise Killed
    with pytest.raises(Killed):
        _train(tmp_path / "b", tmp_path / "b.pt", die_after_epoch_2)
    assert (tmp_path / "b" / STATE_FILE).is_file()
    resumed = []
    result = _train(tmp_path / "b", tmp_path / "b.pt", resumed.append)
    assert resumed == straight  # epochs 1-2 replayed from the state, 3-4 trained again
    assert result == expected
    a = torch.load(tmp_path / "a.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_the_state_directory_is_kept_for_its_fingerprint_only(tmp_path):
    state = tmp_path / "train"
    claim_state_dir(state, "one")
    (state / STATE_FILE).write_text("state")
    claim_state_dir(state, "one")
    assert (state / STATE_FILE).read_text() == "state"
    claim_state_dir(state, "two")
    assert not (state / STATE_FILE).exists()
