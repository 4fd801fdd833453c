"""The training data path: each image read once per epoch, every caption once, in a seeded
order; no grid read without attention; no global determinism switched on behind the caller."""

import numpy as np
import torch
from params_overrides import cpu_training
from test_feature_store import VOCAB, _split_inputs, write_store
from test_training import EMBEDDINGS, _split
from test_training import VOCAB as TASK_VOCAB

from imcap.features.sharding import Shard
from imcap.features.splits import CaptionedSplit, NoRegions, load_split
from imcap.features.store import FeatureStore
from imcap.model.decoder import DecoderConfig
from imcap.training.batches import EpochBatches, plan_epoch
from imcap.training.loop import train_decoder


class CountingRows:
    """In-memory rows that count how often each row is read."""

    def __init__(self, rows: torch.Tensor) -> None:
        self.rows, self.reads = rows, np.zeros(len(rows), dtype=int)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        np.add.at(self.reads, index.numpy(), 1)
        return self.rows[index]


def _five_captions_each(n: int) -> CaptionedSplit:
    base = _split(n, 0)
    order = torch.arange(n).repeat_interleave(5)
    return CaptionedSplit(grid=CountingRows(base.grid), pooled=CountingRows(base.pooled),
                          captions=base.captions[order], image_row=order,
                          references=base.references)


def test_by_image_an_epoch_reads_each_image_once_and_holds_every_caption_once():
    split = _five_captions_each(20)
    plan = plan_epoch(split, 10, torch.Generator().manual_seed(0), by_image=True)
    assert [len(captions) for captions in plan] == [10] * 10  # 10 captions = 2 images
    batches = [batch for batch in EpochBatches(split, plan, Shard())]
    assert (split.grid.reads == 1).all() and (split.pooled.reads == 1).all()
    assert sum(len(b.tokens) for b in batches) == 100
    assert all(len(b.pooled) == 2 and len(b.owner) == 10 and b.global_words == 10 * 6
               for b in batches)
    again = plan_epoch(split, 10, torch.Generator().manual_seed(0), by_image=True)
    assert all(np.array_equal(a, b) for a, b in zip(plan, again, strict=True))


def test_by_caption_every_caption_once_with_its_own_image():
    split = _five_captions_each(20)
    plan = plan_epoch(split, 10, torch.Generator().manual_seed(0))
    assert sorted(np.concatenate(plan).tolist()) == list(range(100))
    assert len({tuple(split.image_row[c].tolist()) for c in plan}) == 10  # images mixed
    for captions, batch in zip(plan, EpochBatches(split, plan, Shard()), strict=True):
        images = torch.unique(split.image_row[captions])
        assert torch.equal(batch.grid, split.grid.rows[images])  # each image once
        assert torch.equal(images[batch.owner], split.image_row[captions])
    again = plan_epoch(split, 10, torch.Generator().manual_seed(0))
    assert all(np.array_equal(a, b) for a, b in zip(plan, again, strict=True))


def test_ranks_share_each_batch_without_overlap():
    split = _five_captions_each(12)
    plan = plan_epoch(split, 20, torch.Generator().manual_seed(1), world_size=2)
    shares = [EpochBatches(split, plan, Shard(rank, 2, rank)) for rank in (0, 1)]
    for k in range(len(plan)):
        a, b = shares[0][k], shares[1][k]
        assert len(a.tokens) + len(b.tokens) == len(plan[k]) and len(a.tokens) == 10
        assert a.global_words == b.global_words == 20 * 6


def test_without_attention_the_grid_is_never_read(tmp_path, monkeypatch):
    names, encoded, dataset = _split_inputs()
    write_store(tmp_path / "f.h5", len(names), names=names)
    store = FeatureStore(tmp_path / "f.h5")
    read = []
    original = FeatureStore.read
    monkeypatch.setattr(FeatureStore, "read",
                        lambda self, name, rows: read.append(name) or original(self, name, rows))
    train = load_split("train", encoded, store, dataset, 0, regions=False)
    val = load_split("val", encoded, store, dataset, 0, regions=False)
    assert isinstance(train.grid, NoRegions)
    config = DecoderConfig(vocab_size=len(VOCAB), embed_dim=6, encoder_channels=8,
                           projection_size=8, hidden_size=8, attention="none", attention_size=4,
                           dropout=0.0)
    logs = []
    train_decoder(config, cpu_training(epochs=1, batch_size=4, max_length=6), torch.randn(
        len(VOCAB), 6), train, val, VOCAB, tmp_path / "m.pt", seed=0, on_epoch=logs.append)
    assert read and set(read) == {"pooled"} and np.isfinite(logs[0].train_loss)


def test_deterministic_algorithms_only_when_asked_and_only_while_training(tmp_path):
    config = DecoderConfig(vocab_size=len(TASK_VOCAB), embed_dim=8, encoder_channels=8,
                           projection_size=8, hidden_size=8, attention="II", attention_size=4,
                           dropout=0.0)
    seen = []

    def train(deterministic: bool) -> None:
        train_decoder(config, cpu_training(epochs=1, deterministic=deterministic), EMBEDDINGS,
                      _split(16, 0), _split(4, 1), TASK_VOCAB, tmp_path / "m.pt", seed=0,
                      on_epoch=lambda log: seen.append(
                          torch.are_deterministic_algorithms_enabled()))

    assert not torch.are_deterministic_algorithms_enabled()
    train(False)
    assert not torch.are_deterministic_algorithms_enabled()
    train(True)
    assert not torch.are_deterministic_algorithms_enabled()
    assert seen == [False, True]
