"""The training data path: every caption once per epoch, in a seeded order, each batch holding
only its images; by image, each image read once per epoch yet batches mixing many images; no grid
read without attention; no global determinism switched on behind the caller."""

import numpy as np
import pytest
import torch
from params_overrides import cpu_training, merged
from test_feature_store import VOCAB, _split_inputs, write_store
from test_training import CONFIG as TASK_CONFIG
from test_training import EMBEDDINGS, _split
from test_training import VOCAB as TASK_VOCAB

from imcap.data.vocab import PAD_ID
from imcap.distributed import Shard
from imcap.features.splits import CaptionedSplit, NoRegions, load_split
from imcap.features.store import FeatureStore, StoreRows
from imcap.model.decoder import DecoderConfig
from imcap.params import ParamError, parse_params
from imcap.training.batches import Batch, epoch_loader, plan_epoch
from imcap.training.loop import train_decoder

ONE_PROCESS = Shard()


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


def _seed(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batches(plan: list[list[np.ndarray]]) -> list[np.ndarray]:
    return [captions for window in plan for captions in window]


def _epoch(split: CaptionedSplit, plan: list[list[np.ndarray]], shard: Shard = ONE_PROCESS,
           num_workers: int = 0) -> list[Batch]:
    return list(epoch_loader(split, plan, shard, torch.device("cpu"), num_workers))


def _assert_holds(batch: Batch, split: CaptionedSplit, captions: np.ndarray,
                  global_captions: np.ndarray) -> None:
    """`batch` holds the captions `captions` of the global batch `global_captions`, and only
    their images, each once."""
    images = torch.unique(split.image_row[captions])
    assert torch.equal(batch.grid, split.grid.rows[images])
    assert torch.equal(batch.pooled, split.pooled.rows[images])
    order = torch.from_numpy(captions)[batch.captions.order]  # the batch's, longest first
    assert torch.equal(images[batch.captions.owner], split.image_row[order])
    tokens = split.captions[order]
    width = int((tokens != PAD_ID).sum(dim=1).max())  # up to the longest caption's EOS
    assert torch.equal(batch.captions.tokens, tokens[:, :width])
    assert batch.global_words == (split.captions[global_captions, 1:] != PAD_ID).sum()


def test_by_image_each_image_is_read_once_and_batches_still_mix_many_images():
    split = _five_captions_each(200)
    plan = plan_epoch(split, 20, _seed(0), image_window=80)
    batches = _epoch(split, plan)
    assert (split.grid.reads == 1).all() and (split.pooled.reads == 1).all()
    assert sorted(np.concatenate(_batches(plan)).tolist()) == list(range(1000))
    for captions, batch in zip(_batches(plan), batches, strict=True):
        _assert_holds(batch, split, captions, captions)
    # Whole images per batch would give 20 / 5 = 4; 20 captions of 80 images give ~18.
    assert np.mean([len(batch.pooled) for batch in batches]) > 15


def test_by_image_windows_of_image_window_images_and_batches_within_them():
    split = _five_captions_each(50)
    plan = plan_epoch(split, 16, _seed(0), image_window=20)
    images = [np.unique(split.image_row[np.concatenate(window)]) for window in plan]
    assert [len(window) for window in images] == [20, 20, 10]
    assert len(np.unique(np.concatenate(images))) == 50
    assert [[len(c) for c in window] for window in plan] == [[16] * 6 + [4]] * 2 + [[16] * 3 + [2]]


def test_by_caption_each_batch_is_a_window_in_the_seeds_order():
    split = _five_captions_each(20)
    plan = plan_epoch(split, 10, _seed(0))
    assert all(len(window) == 1 for window in plan)
    assert np.array_equal(np.concatenate(_batches(plan)), torch.randperm(100, generator=_seed(0)))
    for captions, batch in zip(_batches(plan), _epoch(split, plan), strict=True):
        _assert_holds(batch, split, captions, captions)
    assert (split.pooled.reads > 1).any()  # an image is read for each batch holding its captions


@pytest.mark.parametrize("window", [None, 30])
def test_the_seed_fixes_every_epoch(window):
    split = _five_captions_each(60)

    def epochs(seed: int) -> list[list[list[int]]]:
        shuffle = _seed(seed)
        return [[c.tolist() for c in _batches(plan_epoch(split, 16, shuffle, image_window=window))]
                for _ in range(2)]

    first, second = epochs(0)
    assert epochs(0) == [first, second] and first != second and epochs(1)[0] != first


def test_workers_read_the_batches_the_training_process_reads():
    split = _split(90, 0)
    plan = plan_epoch(split, 16, _seed(0), image_window=40)
    here, there = _epoch(split, plan), _epoch(split, plan, num_workers=2)
    assert len(here) == len(there) == len(_batches(plan))
    for a, b in zip(here, there, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(
            (a.grid, a.pooled, a.captions.tokens, a.captions.owner),
            (b.grid, b.pooled, b.captions.tokens, b.captions.owner),
            strict=True))
        assert a.global_words == b.global_words


@pytest.mark.parametrize("window", [None, 7])
def test_ranks_share_each_batch_without_overlap(window):
    plan = plan_epoch(_five_captions_each(24), 20, _seed(1), world_size=2, image_window=window)
    splits = [_five_captions_each(24) for _ in range(2)]  # one per rank, counting its reads
    ranks = [_epoch(splits[rank], plan, Shard(rank, 2, rank)) for rank in (0, 1)]
    for captions, a, b in zip(_batches(plan), *ranks, strict=True):
        half = len(captions) // 2
        _assert_holds(a, splits[0], captions[:half], captions)
        _assert_holds(b, splits[1], captions[half:], captions)
    reads = [split.pooled.reads for split in splits]
    assert (reads[0] + reads[1] >= 1).all()
    if window is not None:
        assert (reads[0] <= 1).all() and (reads[1] <= 1).all()


def test_a_batch_or_window_with_fewer_captions_than_ranks_joins_the_one_before():
    split = _five_captions_each(21)  # windows of 10, 10 and 1 image(s): 50, 50 and 5 captions
    sizes = [[[len(c) for c in window] for window in plan_epoch(
        split, 20, _seed(0), world_size=world, image_window=10)] for world in (1, 12)]
    assert sizes == [[[20, 20, 10], [20, 20, 10], [5]], [[20, 30], [20, 20, 15]]]
    by_caption = plan_epoch(split, 20, _seed(0), world_size=8)
    assert [len(c) for c in _batches(by_caption)] == [20, 20, 20, 20, 25]


@pytest.mark.parametrize("window", [0, -1])
def test_image_window_must_be_positive(window):
    with pytest.raises(ValueError, match=r"image_window must be > 0"):
        plan_epoch(_five_captions_each(4), 4, _seed(0), image_window=window)
    with pytest.raises(ParamError, match=r"train\.image_window must be > 0"):
        parse_params(merged({"train": {"image_window": window}}))


def test_training_by_image_reads_each_image_once_an_epoch(tmp_path):
    split = _five_captions_each(24)
    logs = []
    train_decoder(TASK_CONFIG, cpu_training(epochs=2, batching="images", image_window=10),
                  EMBEDDINGS, split, _split(8, 1), TASK_VOCAB, tmp_path / "m.pt", seed=0,
                  on_epoch=logs.append)
    assert (split.pooled.reads == 2).all() and (split.grid.reads == 2).all()
    assert len(logs) == 2 and all(np.isfinite(log.train_loss) for log in logs)


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


# Speed-only train params (imcap.params_base.SPEED_ONLY) and a value that takes another code path
# than the default's: each must train exactly the same weights.
OTHER_SPEED_VALUES = {"train.num_workers": 2, "train.features_in_memory_gb": 0.0}


def test_speed_only_params_train_exactly_the_same_weights(tmp_path):
    """Workers reading the windows, and the store read lazily instead of from RAM: the same
    epoch logs and bit-identical weights (with dropout: the same random draws too), so neither
    reruns `train` nor invalidates a resume state."""
    from imcap.params_base import speed_only_keys
    from imcap.training.params import TrainStageParams

    assert speed_only_keys(TrainStageParams) == set(OTHER_SPEED_VALUES)
    names, encoded, dataset = _split_inputs()
    write_store(tmp_path / "f.h5", len(names), names=names)
    store = FeatureStore(tmp_path / "f.h5")
    config = DecoderConfig(vocab_size=len(VOCAB), embed_dim=6, encoder_channels=8,
                           projection_size=8, hidden_size=8, attention="I", attention_size=4,
                           dropout=0.3)
    embeddings = torch.randn(len(VOCAB), 6, generator=torch.Generator().manual_seed(0))
    runs = {}
    for name, changes in (("default", {}), ("other", OTHER_SPEED_VALUES)):
        settings = cpu_training(epochs=3, batch_size=4, image_window=3, max_length=6,
                                **{key.split(".")[1]: value for key, value in changes.items()})
        in_memory = int(settings.features_in_memory_gb * 2**30)  # as the stages compute it
        train, val = (load_split(split, encoded, store, dataset, in_memory)
                      for split in ("train", "val"))
        logs = []
        train_decoder(config, settings, embeddings, train, val, VOCAB, tmp_path / f"{name}.pt",
                      seed=0, on_epoch=logs.append)
        runs[name] = logs, torch.load(tmp_path / f"{name}.pt", weights_only=True)["state_dict"]
    assert isinstance(train.grid, StoreRows)  # the other run read the store lazily
    (logs, weights), (other_logs, other_weights) = runs["default"], runs["other"]
    assert logs == other_logs
    assert all(torch.equal(weights[key], other_weights[key]) for key in weights)


def _lazy(split: CaptionedSplit) -> CaptionedSplit:
    """`split` as if read from the store batch by batch."""
    return CaptionedSplit(grid=CountingRows(split.grid), pooled=CountingRows(split.pooled),
                          captions=split.captions, image_row=split.image_row,
                          references=split.references)


def test_auto_workers_read_ahead_only_on_cuda_for_a_split_read_from_the_store(monkeypatch):
    from imcap.training import readahead

    monkeypatch.setattr(readahead, "_usable_cpus", lambda: 16)
    split = _split(40, 0)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert readahead.readers("auto", _lazy(split), 10, 2, cuda) == readahead.AUTO_WORKERS
    assert readahead.readers("auto", split, 10, 2, cuda) == 0  # in RAM: nothing to wait for
    assert readahead.readers("auto", _lazy(split), 10, 2, cpu) == 0  # the CPU does both
    assert readahead.readers(3, split, 10, 2, cpu) == 3


def _small_shared_memory(monkeypatch, free: int) -> None:
    """A /dev/shm with `free` bytes, as Docker's default 64 MB is for a COCO window."""
    import shutil as real_shutil

    from imcap.training import readahead

    usage = real_shutil.disk_usage(".")
    monkeypatch.setattr(readahead.shutil, "disk_usage",
                        lambda path: usage._replace(free=free))


def test_workers_whose_windows_do_not_fit_in_shared_memory_are_one_line_not_a_bus_error(
        monkeypatch):
    from imcap.training.readahead import SharedMemoryError

    split = _split(90, 0)
    plan = plan_epoch(split, 16, _seed(0), image_window=40)
    _small_shared_memory(monkeypatch, free=1000)
    with pytest.raises(SharedMemoryError) as error:
        _epoch(split, plan, num_workers=2)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("train.num_workers 2: the windows they read ahead take up to ")
    assert "/dev/shm, which has 0 MB free; give it more (Docker: --shm-size=1g" in message
    assert message.endswith("or set train.num_workers to 0 (read in the training process)")
    _small_shared_memory(monkeypatch, free=2**30)  # room enough: the workers read
    assert len(_epoch(split, plan, num_workers=2)) == len(_batches(plan))


def test_auto_reads_in_the_training_process_when_shared_memory_is_too_small(monkeypatch,
                                                                             capsys):
    from imcap.training import readahead

    monkeypatch.setattr(readahead, "_usable_cpus", lambda: 16)
    readahead._say.cache_clear()
    _small_shared_memory(monkeypatch, free=1000)
    lazy = _lazy(_split(40, 0))
    for _ in range(2):  # every epoch asks; the line is said once
        assert readahead.readers("auto", lazy, 10, 2, torch.device("cuda")) == 0
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith("train.num_workers auto: reading in the training process, not in "
                           f"{readahead.AUTO_WORKERS} workers: the windows they read ahead take")
    readahead._say.cache_clear()
