"""Training on a tiny synthetic task where the caption is a function of the features."""

import dataclasses

import pytest
import torch
from params_overrides import cpu_training

from imcap.data.vocab import BOS_ID, EOS_ID, SPECIALS, Vocabulary
from imcap.features.splits import CaptionedSplit
from imcap.model.checkpoint import load_checkpoint
from imcap.model.decoder import DecoderConfig
from imcap.stage import run_stage
from imcap.training import loop
from imcap.training.loop import train_decoder
from imcap.training.resume import STATE_FILE

WORDS = ("red", "blue", "circle", "square", "a", "is", "here")
VOCAB = Vocabulary((*SPECIALS, *WORDS))


def _split(n, seed):
    """Image i has colour bit c and shape bit s in its features; caption 'a c s is here'."""
    g = torch.Generator().manual_seed(seed)
    bits = torch.randint(0, 2, (n, 2), generator=g)
    grid = torch.randn(n, 4, 8, generator=g) * 0.1
    grid[:, 0, 0] += bits[:, 0] * 2 - 1
    grid[:, 1, 1] += bits[:, 1] * 2 - 1
    words = [["a", WORDS[int(c)], WORDS[2 + int(s)], "is", "here"] for c, s in bits]
    captions = torch.tensor([[BOS_ID, *map(VOCAB.id, w), EOS_ID] for w in words])
    return CaptionedSplit(grid=grid, pooled=grid.mean(dim=1), captions=captions,
                          image_row=torch.arange(n), references=[[w] for w in words])


EMBEDDINGS = torch.randn(len(VOCAB), 8, generator=torch.Generator().manual_seed(0))
CONFIG = DecoderConfig(vocab_size=len(VOCAB), embed_dim=8, encoder_channels=8,
                       projection_size=16, hidden_size=16, attention="I", attention_size=8,
                       dropout=0.0)


TRANSFORMER = dataclasses.replace(CONFIG, decoder="transformer", layers=1, heads=2, width=16)


def _train(tmp_path, name, epochs=8, patience=50, on_epoch=lambda log: None, **settings):
    return train_decoder(CONFIG, cpu_training(epochs=epochs, patience=patience, **settings),
                         EMBEDDINGS, _split(128, 0), _split(32, 1), VOCAB, tmp_path / name,
                         seed=3, on_epoch=on_epoch)


def test_learns_the_task_and_keeps_the_best_checkpoint(tmp_path):
    logs = []
    result = _train(tmp_path, "model.pt", on_epoch=logs.append, average_last=0)
    assert logs[-1].train_loss < logs[0].train_loss / 2
    assert result.best_val_bleu4 == max(log.val_bleu4 for log in logs)
    assert result.best_val_bleu4 > 90  # the captions are fully determined by the features
    assert (result.averaged_epochs, result.model_val_bleu4) == (0, result.best_val_bleu4)
    checkpoint = torch.load(tmp_path / "model.pt", weights_only=True)
    assert checkpoint["epoch"] == result.best_epoch
    model = load_checkpoint(tmp_path / "model.pt")
    assert model.config == CONFIG and not model.training


def test_a_loss_no_longer_finite_stops_training_in_one_line_naming_the_epoch(
        tmp_path, monkeypatch, capsys):
    """Before it is validated, saved or published: a model that trained to `loss nan` captions
    nonsense (or, empty captions)."""
    losses = iter([2.5, float("nan"), 2.0])
    monkeypatch.setattr(loop, "train_epoch", lambda *args, **kwargs: next(losses))
    logs = []
    with pytest.raises(SystemExit) as exit_:
        run_stage("train", lambda: _train(tmp_path, "model.pt", epochs=3, on_epoch=logs.append))
    assert exit_.value.code == 1
    assert capsys.readouterr().err == (
        "train: epoch 2: the training loss is nan: training diverged, most likely from a "
        "learning rate too high for this model (0.02); lower train.learning_rate (or "
        "train.grad_clip) and rerun\n")
    assert [log.epoch for log in logs] == [1]


@pytest.mark.parametrize("config", [CONFIG, TRANSFORMER], ids=["lstm", "transformer"])
def test_the_published_model_is_the_mean_of_the_last_epochs_weights(tmp_path, config):
    """`train.average_last: 3`: the checkpoint holds the mean of the weights at the end of
    epochs 4-6 (read from the resume state each epoch writes), validated."""
    state, weights = tmp_path / "state", {}

    def keep_weights(log):
        weights[log.epoch] = torch.load(state / STATE_FILE, weights_only=True)["parts"]["model"]

    result = train_decoder(config, cpu_training(epochs=6, patience=50, average_last=3),
                           EMBEDDINGS, _split(128, 0), _split(32, 1), VOCAB,
                           tmp_path / "model.pt", seed=3, on_epoch=keep_weights,
                           state_dir=state)
    checkpoint = torch.load(tmp_path / "model.pt", weights_only=True)
    assert (result.averaged_epochs, checkpoint["epoch"]) == (3, 6)
    assert checkpoint["val_bleu4"] == result.model_val_bleu4 > 90  # both decoders: 100
    for key, value in checkpoint["state_dict"].items():
        mean = sum(weights[epoch][key] for epoch in (4, 5, 6)) / 3
        assert torch.allclose(value, mean, atol=1e-6), key


def test_same_seed_same_result(tmp_path):
    first, second = [], []
    _train(tmp_path, "a.pt", epochs=2, on_epoch=first.append)
    _train(tmp_path, "b.pt", epochs=2, on_epoch=second.append)
    assert first == second
    a = torch.load(tmp_path / "a.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_early_stopping_after_patience_epochs_without_improvement(tmp_path, monkeypatch):
    from imcap.evaluation.split_evaluation import SplitEvaluation
    from imcap.training import loop as training

    scores = iter([10.0, 12.0, 11.0, 12.0, 9.0, 50.0])

    def fake_eval(*args, **kwargs):
        return SplitEvaluation(1.0, {"bleu4": next(scores)}, [])

    monkeypatch.setattr(training, "evaluate_split", fake_eval)
    result = _train(tmp_path, "m.pt", epochs=6, patience=3, average_last=2)
    assert result.stopped_early
    assert (result.best_epoch, result.best_val_bleu4, result.epochs_run) == (2, 12.0, 5)
    # stopped early, it publishes the mean of its last 2 epochs (4 and 5), validated once more
    assert (result.averaged_epochs, result.model_val_bleu4) == (2, 50.0)
    assert torch.load(tmp_path / "m.pt", weights_only=True)["epoch"] == 5


def test_patience_running_out_on_the_last_epoch_is_no_early_stop(tmp_path, monkeypatch):
    from imcap.evaluation.split_evaluation import SplitEvaluation
    from imcap.training import loop as training

    scores = iter([10.0, 12.0, 11.0, 11.0, 11.0])  # stale 3 = patience at epoch 5 = the last

    def fake_eval(*args, **kwargs):
        return SplitEvaluation(1.0, {"bleu4": next(scores, 11.0)}, [])

    monkeypatch.setattr(training, "evaluate_split", fake_eval)
    result = _train(tmp_path, "m.pt", epochs=5, patience=3, average_last=0)
    assert (result.epochs_run, result.stopped_early) == (5, False)


def test_teacher_forcing_ratio_reaches_the_model(tmp_path):
    """Below 1 the decoder is fed its own words part of the time: the same seed then gives
    another training loss (forward()'s mechanism itself is tested in test_model.py)."""
    losses = {}
    for ratio in (1.0, 0.5, 0.0):
        logs = []
        train_decoder(CONFIG, cpu_training(epochs=1, learning_rate=0.01, teacher_forcing=ratio,
                                           patience=5),
                      EMBEDDINGS, _split(64, 0), _split(16, 1), VOCAB, tmp_path / f"{ratio}.pt",
                      seed=0, on_epoch=logs.append)
        losses[ratio] = logs[0].train_loss
    assert len(set(losses.values())) == 3
