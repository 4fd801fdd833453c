"""Self-critical epochs in `train_decoder` (`train.scst_epochs`): off, training is exactly the
cross-entropy training; on, they follow the reward from the cross-entropy model, continue the
epoch numbers and logs, publish their last weights, and resume after a kill."""

import dataclasses
import os

import pytest
import torch
from params_overrides import cpu_training
from test_training import CONFIG, EMBEDDINGS, TRANSFORMER, UPDOWN, VOCAB, _split
from test_training_resume import Killed

from imcap.data.vocab import BOS_ID, EOS_ID
from imcap.features.splits import CaptionedSplit
from imcap.model.checkpoint import load_checkpoint
from imcap.training import self_critical
from imcap.training.loop import train_decoder
from imcap.training.resume import STATE_FILE, EpochLog

GOOD = VOCAB.id("red")  # the word the reward prefers on images 0-7


def _train(tmp_path, name, split, epochs=2, config=CONFIG, on_epoch=lambda log: None,
           state_dir=None, **settings):
    return train_decoder(config, cpu_training(epochs=epochs, **settings), EMBEDDINGS, split,
                         _split(16, 1), VOCAB, tmp_path / name, seed=4, on_epoch=on_epoch,
                         state_dir=state_dir)


def test_scst_epochs_0_trains_exactly_as_cross_entropy_alone(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    default = _train(tmp_path, "a/model.pt", _split(64, 0))  # a zip names its file

    def never(*args, **kwargs):
        raise AssertionError("a self-critical code path ran with scst_epochs 0")
    monkeypatch.setattr(self_critical, "self_critical_batch", never)
    monkeypatch.setattr(self_critical, "reward_of", never)
    logs = []
    other = _train(tmp_path, "b/model.pt", _split(64, 0), on_epoch=logs.append, scst_epochs=0,
                   scst_learning_rate=0.5, scst_samples=2, scst_baseline="mean",
                   scst_bleu_weight=1.0, scst_batch_size=3)
    assert other == default and other.scst_epochs_run == 0
    assert (tmp_path / "b/model.pt").read_bytes() == (tmp_path / "a/model.pt").read_bytes()
    assert [log.row() for log in logs] == [
        {"epoch": log.epoch, "train_loss": log.train_loss, "val_loss": log.val_loss,
         "val_bleu4": log.val_bleu4} for log in logs]  # no scst_* in the logs


def _preferring(word: int) -> CaptionedSplit:
    """16 images: 0-7 described by `word` alone, 8-15 by other words (so that `word` is rare
    enough to weigh in CIDEr-D); one feature tells the groups apart."""
    g = torch.Generator().manual_seed(0)
    grid = torch.randn(16, 4, 8, generator=g) * 0.1
    grid[:8, 0, 0] += 1.0
    words = [[word] * 3] * 8 + [[VOCAB.id(w) for w in ("a", "blue", "square")]] * 8
    captions = torch.tensor([[BOS_ID, *w, EOS_ID] for w in words])
    return CaptionedSplit(grid=grid, pooled=grid.mean(dim=1), captions=captions,
                          image_row=torch.arange(16),
                          references=[[[VOCAB.words[i] for i in w]] for w in words])


def _first_word_probability(path, split, word):
    model = load_checkpoint(path)
    with torch.no_grad():
        logits, _, _ = model.step(torch.full((8,), BOS_ID),
                                  model.start(split.grid[:8], split.pooled[:8]))
    return torch.softmax(logits, dim=1)[:, word].mean().item()


@pytest.mark.statistical
@pytest.mark.parametrize("config", [CONFIG, TRANSFORMER, UPDOWN],
                         ids=["lstm", "transformer", "updown"])
@pytest.mark.parametrize("baseline", ["greedy", "mean"])
def test_self_critical_epochs_raise_the_probability_of_the_rewarded_word(tmp_path, config,
                                                                         baseline):
    """One cross-entropy epoch at a negligible rate leaves the model as initialised; the
    self-critical epochs then learn the word the reward prefers."""
    split = _preferring(GOOD)
    common = dict(epochs=1, learning_rate=1e-9, average_last=0, max_length=3, config=config,
                  scst_learning_rate=0.02, scst_batch_size=4, scst_baseline=baseline)
    _train(tmp_path, "ce.pt", split, **common)
    logs = []
    result = _train(tmp_path, "scst.pt", split, on_epoch=logs.append, scst_epochs=6, **common)
    before = _first_word_probability(tmp_path / "ce.pt", split, GOOD)
    after = _first_word_probability(tmp_path / "scst.pt", split, GOOD)
    assert before < 0.2 and after > 0.5, (
        f"probability of the rewarded word: before {before:.3f} (must be < 0.2), "
        f"after {after:.3f} (must be > 0.5)")
    assert [log.epoch for log in logs] == [1, 2, 3, 4, 5, 6, 7]  # numbered on
    assert logs[0].scst_reward is None and logs[0].train_loss is not None
    assert all(log.train_loss is None for log in logs[1:])
    assert logs[-1].scst_reward > logs[1].scst_reward
    assert (result.epochs_run, result.scst_epochs_run) == (1, 6)
    assert result.scst_reward == logs[-1].scst_reward
    assert result.model_val_bleu4 == logs[-1].val_bleu4
    assert torch.load(tmp_path / "scst.pt", weights_only=True)["epoch"] == 7


# Dropout draws from the global RNG, as do the sampled captions: resuming must restore both.
DROPOUT = dataclasses.replace(CONFIG, dropout=0.3)
RESUMABLE = dict(epochs=2, scst_epochs=3, scst_batch_size=16, config=DROPOUT)


@pytest.mark.parametrize("kill_after", [2, 4], ids=["cross-entropy", "self-critical"])
def test_a_run_killed_in_either_phase_resumes_to_the_uninterrupted_result(tmp_path, capsys,
                                                                          kill_after):
    straight = []
    expected = _train(tmp_path, "a.pt", _split(64, 0), on_epoch=straight.append,
                      state_dir=tmp_path / "a", **RESUMABLE)

    def die(log):
        if log.epoch == kill_after:
            raise Killed
    with pytest.raises(Killed):
        _train(tmp_path, "b.pt", _split(64, 0), on_epoch=die, state_dir=tmp_path / "b",
               **RESUMABLE)
    capsys.readouterr()
    resumed = []
    result = _train(tmp_path, "b.pt", _split(64, 0), on_epoch=resumed.append,
                    state_dir=tmp_path / "b", **RESUMABLE)
    if kill_after == 4:
        assert any(line.startswith("resuming after self-critical epoch 2 from")
                   for line in capsys.readouterr().out.splitlines())
    assert resumed == straight and result == expected
    a = torch.load(tmp_path / "a.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert (tmp_path / "b" / STATE_FILE).is_file()


def test_an_epoch_log_row_holds_only_the_numbers_it_has():
    assert EpochLog(1, 0.5, 0.6, 20.0).row() == {"epoch": 1, "train_loss": 0.5,
                                                "val_loss": 0.6, "val_bleu4": 20.0}
    assert EpochLog(2, None, 0.7, 21.0, 1.2, 1.1).row() == {
        "epoch": 2, "val_loss": 0.7, "val_bleu4": 21.0, "scst_reward": 1.2,
        "scst_baseline_reward": 1.1}


def test_image_batches_cover_every_image_once_and_leave_no_rank_idle():
    batches = self_critical.image_batches(10, 4, torch.Generator().manual_seed(0), 3)
    assert [len(b) for b in batches] == [4, 6]  # a last batch of 2 < 3 ranks joins
    assert sorted(torch.cat(batches).tolist()) == list(range(10))


def test_the_mean_baseline_needs_two_samples():
    with pytest.raises(ValueError, match="scst_samples >= 2"):
        cpu_training(scst_baseline="mean", scst_samples=1)


class ReadBy:
    """Rows that note which process read how many of them (a worker's reads are not this
    process's)."""

    def __init__(self, rows: torch.Tensor, log) -> None:
        self.rows, self.log = rows, log

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()} {len(index)}\n")
        return self.rows[index]


def test_self_critical_epochs_read_ahead_in_workers_and_train_the_same_weights(tmp_path):
    """`train.num_workers` reads the self-critical batches' features in worker processes, as it
    does the cross-entropy windows: the same epochs and bit-identical weights (the captions
    are sampled from the same random draws)."""
    results, readers = {}, {}
    for workers in (0, 2):
        log = tmp_path / f"reads{workers}.txt"
        base = _split(64, 0)
        split = dataclasses.replace(base, grid=ReadBy(base.grid, log),
                                    pooled=ReadBy(base.pooled, log))
        logs = []
        results[workers] = (_train(tmp_path, f"w{workers}.pt", split, on_epoch=logs.append,
                                   num_workers=workers, **RESUMABLE), logs)
        reads = [line.split() for line in log.read_text().splitlines()]
        # the self-critical batches: scst_batch_size images (a cross-entropy window: all 64)
        readers[workers] = {pid for pid, rows in reads if int(rows) == RESUMABLE["scst_batch_size"]}
    assert results[2] == results[0]
    a, b = (torch.load(tmp_path / f"w{w}.pt", weights_only=True)["state_dict"] for w in (0, 2))
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert readers[0] == {str(os.getpid())}
    assert readers[2] and str(os.getpid()) not in readers[2]
