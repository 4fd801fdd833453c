"""Training with the encoder's last stage tuned (`train.finetune_encoder`): the tuned stage
learns from `train.finetune_from_epoch` on and not before, its weights reach the checkpoint,
a killed run resumes to exactly the uninterrupted result (the tuned weights and their optimizer
state are in the resume state), self-critical epochs tune it too, and DistributedDataParallel
trains encoder stage and decoder together as one process would."""

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from params_overrides import cpu_features, cpu_training
from test_finetuning import write_images
from test_training import EMBEDDINGS, VOCAB, _split
from test_training_ddp import _free_port
from test_training_resume import Killed, _die_after_epoch

from imcap.data.vocab import EncodedCaptions
from imcap.features.extraction import extract_features
from imcap.features.split_encoder import split_encoder
from imcap.features.store import FeatureStore
from imcap.model.decoder import DecoderConfig
from imcap.training.finetuning import Finetuning, finetuning_splits
from imcap.training.loop import train_decoder

ENCODER, SIZE = "resnet18", 32  # 1 stage: layer4 on layer3's 256 x 2 x 2 outputs
CONFIG = DecoderConfig(vocab_size=len(VOCAB), embed_dim=8, encoder_channels=512,
                       projection_size=16, hidden_size=16, attention="I", attention_size=8,
                       dropout=0.3)


def trunk_split(n, seed):
    """`_split`'s captions with random trunk outputs (the tail's input) for features."""
    split = _split(n, seed)
    trunk = torch.randn(n, 256, 2, 2, generator=torch.Generator().manual_seed(seed))
    return dataclasses.replace(split, grid=trunk, pooled=torch.empty(n, 0))


def train(tmp_path, name, from_epoch=1, on_epoch=lambda log: None, state=False, tail=None,
          config=CONFIG, **changes):
    tail = tail or split_encoder(ENCODER, "none", SIZE, 1).tail
    settings = cpu_training(**{"epochs": 3, "batch_size": 16, "teacher_forcing": 0.7,
                               "finetune_encoder": 1, "finetune_from_epoch": from_epoch,
                               "encoder_learning_rate": 0.01, **changes})
    return train_decoder(config, settings, EMBEDDINGS, trunk_split(48, 0), trunk_split(16, 1),
                         VOCAB, tmp_path / f"{name}.pt", seed=2, on_epoch=on_epoch,
                         state_dir=tmp_path / name if state else None,
                         finetuning=Finetuning(tail, from_epoch, 0.01))


def tuned(path):
    return torch.load(path, weights_only=True)["encoder"]["state_dict"]


def weights(tail):
    return {k: v.detach().clone() for k, v in tail.state_dict().items() if k.endswith("weight")}


def test_the_tuned_stage_learns_from_its_first_epoch_on_and_reaches_the_checkpoint(tmp_path):
    tail = split_encoder(ENCODER, "none", SIZE, 1).tail
    initial, seen = weights(tail), []
    train(tmp_path, "late", from_epoch=3, tail=tail, average_last=0,
          on_epoch=lambda log: seen.append(weights(tail)))
    for epoch in (0, 1):  # epochs 1 and 2 leave it as it was
        assert all(torch.equal(seen[epoch][k], initial[k]) for k in initial)
    assert not any(torch.equal(seen[2][k], initial[k]) for k in initial)
    saved = tuned(tmp_path / "late.pt")
    assert {f"graph.{k}" for k in saved} == set(tail.state_dict())


def test_a_killed_finetuning_resumes_to_exactly_the_uninterrupted_result(tmp_path):
    expected = train(tmp_path, "a", state=True)
    with pytest.raises(Killed):
        train(tmp_path, "b", state=True, on_epoch=_die_after_epoch(2))
    result = train(tmp_path, "b", state=True)
    assert result == expected
    a, b = tuned(tmp_path / "a.pt"), tuned(tmp_path / "b.pt")
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_self_critical_epochs_tune_the_encoder_too(tmp_path):
    train(tmp_path, "ce", epochs=1)
    train(tmp_path, "scst", epochs=1, scst_epochs=1, scst_batch_size=8, scst_samples=2)
    ce, scst = tuned(tmp_path / "ce.pt"), tuned(tmp_path / "scst.pt")
    assert not all(torch.equal(ce[k], scst[k]) for k in ce if k.endswith("weight"))


NO_DROPOUT = dataclasses.replace(CONFIG, dropout=0.0)  # dropout draws per rank


def _ddp_rank(rank: int, world: int, port: int, tmp: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    train(Path(tmp), "ddp", from_epoch=2, teacher_forcing=1.0, config=NO_DROPOUT)


def test_two_gloo_ranks_tune_the_encoder_as_one_process(tmp_path):
    """From epoch 2 on: before it the tuned stage takes no gradient on any rank."""
    train(tmp_path, "single", from_epoch=2, teacher_forcing=1.0, config=NO_DROPOUT)
    mp.spawn(_ddp_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    single, ddp = tuned(tmp_path / "single.pt"), tuned(tmp_path / "ddp.pt")
    initial = split_encoder(ENCODER, "none", SIZE, 1).tail.state_dict()
    for key in (k for k in single if k.endswith("weight")):
        moved = single[key] - initial[f"graph.{key}"]
        # Adam magnifies the ranks' other summation order where a gradient is near 0: the
        # updates differ by at most 2.4e-4 of their size (measured), not bit for bit
        assert moved.norm() > 0 and (ddp[key] - single[key]).norm() / moved.norm() < 1e-3


def test_the_trunk_outputs_come_from_the_images_as_the_features_stage_reads_them(tmp_path):
    """The frozen trunk's outputs, through the tuned stage, give the features the features
    stage stored for the same image files: one preprocessing for both."""
    names = [path.name for path in write_images(tmp_path / "img", 4)]
    extract_features(tmp_path / "img", names, tmp_path / "f.h5", ENCODER,
                     cpu_features(image_size=SIZE))
    store = FeatureStore(tmp_path / "f.h5")
    encoded = EncodedCaptions(filenames=np.array(names), splits=np.array(["train"] * 4),
                              tokens=np.zeros((4, 3), dtype=np.int64),
                              image_index=np.arange(4))
    split = dataclasses.replace(trunk_split(4, 0), pooled=torch.zeros(4, 512))
    settings = cpu_training(finetune_encoder=1)
    finetuning, splits = finetuning_splits(settings, store, encoded, {"train": split},
                                           tmp_path / "img", torch.device("cpu"))
    with torch.no_grad():
        _, pooled = finetuning.tail(splits["train"].grid)
    stored = torch.from_numpy(store.load(np.arange(4))[1])
    assert float((pooled - stored).norm() / stored.norm()) < 1e-5
