"""The HDF5 store: layout, lazy reads in any order, the lazy split used by training, merging."""

import pickle

import h5py
import numpy as np
import pytest
import torch
from params_overrides import cpu_training

from imcap.data.karpathy import CaptionDataset, CaptionedImage
from imcap.data.vocab import BOS_ID, EOS_ID, SPECIALS, EncodedCaptions, Vocabulary
from imcap.evaluation.split_evaluation import evaluate_split
from imcap.features.splits import CaptionedSplit, load_split
from imcap.features.store import (
    FeatureStore,
    StoreFormatError,
    StoreRows,
    create_store,
    merge_shards,
)
from imcap.model.decoder import CaptionDecoder, DecoderConfig
from imcap.model.loss import caption_loss
from imcap.training.loop import train_decoder

WORDS = ("a", "red", "blue", "thing")
VOCAB = Vocabulary((*SPECIALS, *WORDS))


def write_store(path, n, regions=4, channels=8, seed=0, names=None):
    """A store of random features (no encoder): grid [n, regions, channels] float16."""
    rng = np.random.default_rng(seed)
    grid = rng.standard_normal((n, regions, channels)).astype(np.float16)
    names = names or [f"img{i}.jpg" for i in range(n)]
    with h5py.File(path, "w") as h5:
        grid_ds, pooled_ds = create_store(h5, names, regions, channels, "float16",
                                          {"encoder": "test"})
        grid_ds[:] = grid
        pooled_ds[:] = grid.astype(np.float32).mean(axis=1)
    return grid


def test_layout_one_chunk_per_image(tmp_path):
    write_store(tmp_path / "f.h5", 5)
    with h5py.File(tmp_path / "f.h5") as h5:
        assert h5["grid"].chunks == (1, 4, 8) and h5["grid"].compression is None
        assert h5["pooled"].chunks == (1, 8) and h5["pooled"].dtype == np.float32
        assert h5.attrs["dtype"] == "float16"
        assert [name.decode() for name in h5["filenames"]][:2] == ["img0.jpg", "img1.jpg"]


def test_reads_rows_in_any_order_with_repeats(tmp_path):
    grid = write_store(tmp_path / "f.h5", 10)
    store = FeatureStore(tmp_path / "f.h5")
    order = np.array([7, 2, 2, 9, 0, 1, 3])
    assert np.array_equal(store.read("grid", order), grid[order])
    loaded_grid, pooled = store.load(np.arange(10))
    assert np.array_equal(loaded_grid, grid)
    assert np.allclose(pooled, grid.astype(np.float32).mean(axis=1))
    assert store.read("grid", []).shape == (0, 4, 8)
    with pytest.raises(IndexError, match=r"f\.h5: rows 0\.\.10 requested, the store holds 10"):
        store.read("grid", [0, 10])


def test_other_layouts_are_read_too(tmp_path):
    """A contiguous or compressed store (older, or written by hand) reads the same."""
    grid = np.random.default_rng(3).standard_normal((9, 2, 3)).astype(np.float16)
    for kwargs in ({}, {"chunks": (4, 2, 3), "compression": "gzip"}):
        with h5py.File(tmp_path / "f.h5", "w") as h5:
            h5.create_dataset("grid", data=grid, **kwargs)
            h5.create_dataset("pooled", data=grid.mean(axis=1, dtype=np.float32))
            h5.create_dataset("filenames", data=[f"{i}" for i in range(9)],
                              dtype=h5py.string_dtype())
        store = FeatureStore(tmp_path / "f.h5")
        order = [8, 0, 1, 2, 5, 5]
        assert np.array_equal(store.read("grid", order), grid[order])
        store.close()


def test_lazy_view_reads_only_when_indexed_and_survives_pickling(tmp_path):
    grid = write_store(tmp_path / "f.h5", 10)
    store = FeatureStore(tmp_path / "f.h5")
    view = store.rows("grid", np.array([8, 6, 4, 2]))  # e.g. one split's images
    assert len(view) == 4 and view.shape == (4, 4, 8) and view.nbytes == 4 * 4 * 8 * 2
    assert torch.equal(view[torch.tensor([3, 0, 0])], torch.from_numpy(grid[[2, 8, 8]]))
    assert torch.equal(view.load(), torch.from_numpy(grid[[8, 6, 4, 2]]))
    copy = pickle.loads(pickle.dumps(view))  # what a DataLoader worker receives: no handle
    assert copy.store._h5 is None
    assert torch.equal(copy[[1]], torch.from_numpy(grid[[6]]))
    store.close()
    assert torch.equal(view[[1]], torch.from_numpy(grid[[6]]))  # reopened on demand


def test_not_a_store_is_named(tmp_path):
    (tmp_path / "junk.h5").write_bytes(b"junk")
    with pytest.raises(StoreFormatError, match=r"junk\.h5: not a feature store"):
        FeatureStore(tmp_path / "junk.h5")


def _split_inputs(n=12):
    names = [f"img{i}.jpg" for i in range(n)]
    splits = ["train"] * 8 + ["val"] * 4
    rng = np.random.default_rng(0)
    words = [[WORDS[0], WORDS[1 + int(rng.integers(2))], WORDS[3]] for _ in range(2 * n)]
    tokens = np.array([[BOS_ID, *map(VOCAB.id, w), EOS_ID] for w in words])
    encoded = EncodedCaptions(tokens=tokens, image_index=np.repeat(np.arange(n), 2),
                              filenames=np.array(names), splits=np.array(splits))
    dataset = CaptionDataset(name="test", images=tuple(
        CaptionedImage(name, i, split, (tuple(words[2 * i]), tuple(words[2 * i + 1])), ())
        for i, (name, split) in enumerate(zip(names, splits, strict=True))))
    return names, encoded, dataset


def test_load_split_is_lazy_above_the_limit_and_trains_the_same(tmp_path):
    names, encoded, dataset = _split_inputs()
    write_store(tmp_path / "f.h5", len(names), names=names)
    store = FeatureStore(tmp_path / "f.h5")
    eager = load_split("train", encoded, store, dataset)
    lazy = load_split("train", encoded, store, dataset, in_memory_limit=0)
    assert isinstance(eager.grid, torch.Tensor) and isinstance(lazy.grid, StoreRows)
    assert isinstance(lazy.pooled, StoreRows) and len(lazy.grid) == 8
    rows = torch.tensor([5, 0, 3, 3])
    assert torch.equal(lazy.grid[lazy.image_row[rows]], eager.grid[eager.image_row[rows]])

    config = DecoderConfig(vocab_size=len(VOCAB), embed_dim=6, encoder_channels=8,
                           projection_size=8, hidden_size=8, attention="I", attention_size=4,
                           dropout=0.0)
    train_settings = cpu_training(epochs=2, batch_size=4, learning_rate=0.01, patience=5,
                                  max_length=6)
    embeddings = torch.randn(len(VOCAB), 6, generator=torch.Generator().manual_seed(0))
    logs: dict[str, list] = {"eager": [], "lazy": []}
    for kind, val_limit in (("eager", 2**30), ("lazy", 0)):
        train = eager if kind == "eager" else lazy
        val = load_split("val", encoded, store, dataset, in_memory_limit=val_limit)
        train_decoder(config, train_settings, embeddings, train, val, VOCAB,
                      tmp_path / f"{kind}.pt", seed=0, on_epoch=logs[kind].append)
    assert logs["eager"] == logs["lazy"]


def test_training_code_takes_either_kind_of_rows(tmp_path):
    names, encoded, dataset = _split_inputs()
    write_store(tmp_path / "f.h5", len(names), names=names)
    store = FeatureStore(tmp_path / "f.h5")
    config = DecoderConfig(vocab_size=len(VOCAB), embed_dim=6, encoder_channels=8,
                           projection_size=8, hidden_size=8, attention="II", attention_size=4,
                           dropout=0.0)
    torch.manual_seed(0)
    model = CaptionDecoder(config).eval()
    results = []
    for limit in (2**30, 0):
        split: CaptionedSplit = load_split("val", encoded, store, dataset,
                                           in_memory_limit=limit)
        loss = caption_loss(model, split, torch.arange(len(split.captions)), torch.device("cpu"))
        results.append((loss.item(), evaluate_split(model, split, VOCAB, torch.device("cpu"),
                                                    max_length=5).captions))
    assert results[0] == results[1]


def _write_rows(path, grid, names, rows=slice(None)):
    """A store with a row per name, only `rows` (a slice) written, from `grid`."""
    with h5py.File(path, "w") as h5:
        grid_ds, pooled_ds = create_store(h5, names, *grid.shape[1:], "float16",
                                          {"encoder": "test"})
        grid_ds[rows] = grid[rows]
        pooled_ds[rows] = grid[rows].astype(np.float32).mean(axis=1)


def _datasets(path):
    """Every dataset as (its bits: raw bytes, or the strings; dtype; chunks), and the attrs."""
    with h5py.File(path) as h5:
        return ({name: (_bits(h5[name][:]), h5[name].dtype, h5[name].chunks) for name in h5},
                dict(h5.attrs))


def _bits(data):
    return data.tolist() if data.dtype.hasobject else data.tobytes()


def test_merged_store_equals_the_store_written_whole(tmp_path):
    """Rank 0's store has a row per image, its slice written; the merge copies the other
    shards' rows into it (an empty one too), chunk by chunk, bit for bit."""
    names = [f"img{i}.jpg" for i in range(6)]
    grid = write_store(tmp_path / "whole.h5", 6, seed=1, names=names)
    _write_rows(tmp_path / "rank0.h5", grid, names, slice(0, 2))
    _write_rows(tmp_path / "rank1.h5", grid[2:2], names[2:2])
    _write_rows(tmp_path / "rank2.h5", grid[2:], names[2:])
    with h5py.File(tmp_path / "rank0.h5", "r+") as store:
        merge_shards(store, [tmp_path / "rank1.h5", tmp_path / "rank2.h5"], start=2)
    assert _datasets(tmp_path / "rank0.h5") == _datasets(tmp_path / "whole.h5")


def test_merge_refuses_shards_that_do_not_fit(tmp_path):
    names = [f"img{i}.jpg" for i in range(4)]
    grid = write_store(tmp_path / "whole.h5", 4, names=names)
    _write_rows(tmp_path / "base.h5", grid, names, slice(0, 2))
    _write_rows(tmp_path / "other.h5", grid[2:], ["x", "y"])
    _write_rows(tmp_path / "short.h5", grid[2:3], names[2:3])
    with h5py.File(tmp_path / "base.h5", "r+") as store:
        with pytest.raises(StoreFormatError, match=r"other\.h5: its images are not rows 2\.\."):
            merge_shards(store, [tmp_path / "other.h5"], start=2)
        with pytest.raises(StoreFormatError, match="filled rows up to 3 of 4"):
            merge_shards(store, [tmp_path / "short.h5"], start=2)
