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
UPDOWN = dataclasses.replace(CONFIG, decoder="updown")


def _train(tmp_path, name, epochs=8, patience=50, on_epoch=lambda log: None, **settings):
    return train_decoder(CONFIG, cpu_training(epochs=epochs, patience=patience, **settings),
                         EMBEDDINGS, _split(128, 0), _split(32, 1), VOCAB, tmp_path / name,
                         seed=3, on_epoch=on_epoch)


@pytest.mark.statistical
def test_learns_the_task_and_keeps_the_best_checkpoint(tmp_path):
    logs = []
    result = _train(tmp_path, "model.pt", on_epoch=logs.append, average_last=0)
    assert logs[-1].train_loss < logs[0].train_loss / 2
    assert result.best_val_bleu4 == max(log.val_bleu4 for log in logs)
    # The captions are fully determined by the features: a model that learns reaches ~100.
    assert result.best_val_bleu4 > 90, f"best validation BLEU-4 {result.best_val_bleu4:.2f} <= 90"
    assert (result.averaged_epochs, result.model_val_bleu4) == (0, result.best_val_bleu4)
    checkpoint = torch.load(tmp_path / "model.pt", weights_only=True)
    assert checkpoint["epoch"] == result.best_epoch
    model = load_checkpoint(tmp_path / "model.pt")
    assert model.config == CONFIG and not model.training


def _scripted_validation(monkeypatch, scores):
    """Validation BLEU-4 from `scores`, in call order: each epoch's, then the average's."""
    from imcap.evaluation.split_evaluation import SplitEvaluation
    from imcap.training import driver

    values = iter(scores)
    monkeypatch.setattr(driver, "evaluate_split",
                        lambda *args, **kwargs: SplitEvaluation(1.0, {"bleu4": next(values)}, []))
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


@pytest.mark.parametrize("config", [CONFIG, TRANSFORMER, UPDOWN],
                         ids=["lstm", "transformer", "updown"])
@pytest.mark.parametrize("mean_bleu4", [45.0, 39.0], ids=["mean-wins", "best-epoch-wins"])
def test_the_published_model_is_the_mean_of_the_epochs_ending_at_the_best_or_the_best_epoch(
        tmp_path, monkeypatch, config, mean_bleu4):
    """`train.average_last: 3`, best epoch 4 of 6: the mean of the weights at the end of epochs
    2-4 (read from the resume state each epoch writes) is validated and published when it
    scores at least the best epoch's 40, else the best epoch's weights stay."""
    _scripted_validation(monkeypatch, [10.0, 20.0, 30.0, 40.0, 35.0, 30.0, mean_bleu4])
    state, weights = tmp_path / "state", {}

    def keep_weights(log):
        weights[log.epoch] = torch.load(state / STATE_FILE, weights_only=True)["parts"]["model"]

    result = train_decoder(config, cpu_training(epochs=6, patience=50, average_last=3),
                           EMBEDDINGS, _split(128, 0), _split(32, 1), VOCAB,
                           tmp_path / "model.pt", seed=3, on_epoch=keep_weights,
                           state_dir=state)
    checkpoint = torch.load(tmp_path / "model.pt", weights_only=True)
    mean_wins = mean_bleu4 >= 40.0
    assert (result.best_epoch, checkpoint["epoch"], result.average_val_bleu4) == (4, 4, mean_bleu4)
    assert result.averaged_epochs == (3 if mean_wins else 0)
    assert checkpoint["val_bleu4"] == result.model_val_bleu4 == max(mean_bleu4, 40.0)
    assert result.published == ("mean of epochs 2-4" if mean_wins else "epoch 4")
    for key, value in checkpoint["state_dict"].items():
        expected = (sum(weights[epoch][key] for epoch in (2, 3, 4)) / 3 if mean_wins
                    else weights[4][key])
        assert torch.allclose(value, expected, atol=1e-6), key


def _noisy_split(n, seed, wrong_shapes):
    """`_split`'s task with the shape word of a `wrong_shapes` share of the captions flipped:
    trained long enough, a decoder learns those flips by heart and validates lower."""
    clean = _split(n, seed)
    flip = torch.rand(n, generator=torch.Generator().manual_seed(seed + 100)) < wrong_shapes
    shapes = {"circle": "square", "square": "circle"}
    words = [[shapes[w] if f and w in shapes else w for w in refs[0]]
             for refs, f in zip(clean.references, flip.tolist(), strict=True)]
    captions = torch.tensor([[BOS_ID, *map(VOCAB.id, w), EOS_ID] for w in words])
    return dataclasses.replace(clean, captions=captions, references=[[w] for w in words])


def test_a_run_that_overfits_and_stops_early_publishes_what_validates_best(tmp_path):
    """Noisy training captions, 32 images, a wider decoder: validation BLEU-4 peaks, then falls
    as the decoder learns the noise, and training stops early. The mean of the last 3 epochs
    (what was published before) validates lower than the model published now."""
    from imcap.evaluation.split_evaluation import evaluate_split
    from imcap.model.registry import build_decoder

    wide = dataclasses.replace(CONFIG, projection_size=64, hidden_size=64)
    state, val = tmp_path / "state", _split(32, 1)
    result = train_decoder(wide, cpu_training(epochs=40, patience=5, average_last=3),
                           EMBEDDINGS, _noisy_split(32, 0, 0.4), val, VOCAB,
                           tmp_path / "model.pt", seed=0, state_dir=state)
    assert result.stopped_early and result.epochs_run >= result.best_epoch + 5
    assert result.model_val_bleu4 >= result.best_val_bleu4
    assert load_checkpoint(tmp_path / "model.pt") is not None
    assert torch.load(tmp_path / "model.pt", weights_only=True)["epoch"] == result.best_epoch
    last = torch.load(state / STATE_FILE, weights_only=True)["parts"]["last_epochs"]["weights"]
    assert len(last) == 3
    last_mean = build_decoder(wide, EMBEDDINGS, False)
    last_mean.load_state_dict({key: torch.stack([w[key] for w in last]).mean(dim=0)
                               for key in last[0]})
    old_rule = evaluate_split(last_mean.eval(), val, VOCAB, torch.device("cpu"), 7).bleu["bleu4"]
    print(f"published {result.published}: {result.model_val_bleu4:.1f}; the mean of the last "
          f"3 epochs: {old_rule:.1f}")
    assert old_rule < result.model_val_bleu4


def test_same_seed_same_result(tmp_path):
    first, second = [], []
    _train(tmp_path, "a.pt", epochs=2, on_epoch=first.append)
    _train(tmp_path, "b.pt", epochs=2, on_epoch=second.append)
    assert first == second
    a = torch.load(tmp_path / "a.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_early_stopping_after_patience_epochs_without_improvement(tmp_path, monkeypatch):
    _scripted_validation(monkeypatch, [10.0, 12.0, 11.0, 12.0, 9.0, 50.0])
    result = _train(tmp_path, "m.pt", epochs=6, patience=3, average_last=2)
    assert result.stopped_early
    assert (result.best_epoch, result.best_val_bleu4, result.epochs_run) == (2, 12.0, 5)
    # stopped early, the mean of the 2 epochs ending at the best one (1 and 2) is validated
    # once more (50), beats epoch 2 alone and is published
    assert (result.averaged_epochs, result.model_val_bleu4) == (2, 50.0)
    assert torch.load(tmp_path / "m.pt", weights_only=True)["epoch"] == 2


def test_patience_running_out_on_the_last_epoch_is_no_early_stop(tmp_path, monkeypatch):
    _scripted_validation(monkeypatch, [10.0, 12.0, 11.0, 11.0, 11.0])  # stale 3 at the last
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


def _wide_split(n, seed, channels=64):
    """`_split`'s task on wider features, 5 captions per image: enough rows for the CPU
    kernels that sum gradients over rows (LayerNorm's, the captions' into their image's) to
    split the sums between threads."""
    base = _split(n, seed)
    grid = torch.randn(n, 4, channels, generator=torch.Generator().manual_seed(seed))
    grid[:, :2, :8] += base.grid[:, :2] * 4
    order = torch.arange(n).repeat(5)
    return dataclasses.replace(base, grid=grid, pooled=grid.mean(dim=1),
                               captions=base.captions[order], image_row=order)


def test_train_cpu_threads_fixes_the_result_whatever_the_processs_thread_count(tmp_path):
    """With `train.cpu_threads: 1`, a process started with 1 or 2 threads (OMP_NUM_THREADS, the
    number of cores) trains bit-identical weights; with 0 (one thread per core) it does not:
    the gradient sums split between threads round otherwise. The process's own count is
    restored after training."""
    config = dataclasses.replace(CONFIG, encoder_channels=64, projection_size=32,
                                 hidden_size=32, attention_size=16)
    train, val = _wide_split(64, 0), _wide_split(16, 1)

    def weights(process_threads, cpu_threads):
        before = torch.get_num_threads()
        torch.set_num_threads(process_threads)
        try:
            path = tmp_path / f"{process_threads}-{cpu_threads}.pt"
            train_decoder(config, cpu_training(epochs=1, batch_size=64, cpu_threads=cpu_threads),
                          EMBEDDINGS, train, val, VOCAB, path, seed=0)
            assert torch.get_num_threads() == process_threads
        finally:
            torch.set_num_threads(before)
        return torch.load(path, weights_only=True)["state_dict"]

    def same(a, b):
        return all(torch.equal(a[key], b[key]) for key in a)

    assert same(weights(1, 1), weights(2, 1))
    assert not same(weights(1, 0), weights(2, 0))
