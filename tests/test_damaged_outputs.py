"""A stage's output read back missing or damaged ends in one line naming the file and the
command that writes it again: a truncated `decoder.pt` for evaluate; a truncated
`captions.npz`, `embeddings.npy` or `metrics/vocab.json` for train; a missing `decoder.pt`."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from params_overrides import write_params

from imcap.atomic import write_json
from imcap.data.karpathy import load_dataset
from imcap.data.vocab import SPECIALS, EncodedCaptions, Vocabulary, encode_dataset
from imcap.model.checkpoint import load_checkpoint, save_checkpoint
from imcap.model.decoder import CaptionDecoder, DecoderConfig
from imcap.paths import (
    CAPTION_FILE,
    CAPTIONS_FILE,
    CHECKPOINT_FILE,
    EMBEDDINGS_FILE,
    VOCAB_FILE,
    VOCAB_METRICS,
)
from imcap.stage import run_stage

WORDS = ("a", "red", "circle")


def vocab_outputs(root: Path) -> None:
    """What the download and vocab stages leave for train: a caption file, the vocabulary, the
    encoded captions, the embedding matrix and the vocabulary metrics."""
    images = [{"filename": f"{i}.png", "imgid": i, "split": split,
               "sentences": [{"tokens": list(WORDS)}]}
              for i, split in enumerate(("train", "val", "test"))]
    (root / CAPTION_FILE).parent.mkdir(parents=True)
    (root / CAPTION_FILE).write_text(json.dumps({"images": images, "image_root": "images"}))
    vocab = Vocabulary(SPECIALS + WORDS)
    vocab.save(root / VOCAB_FILE)
    encode_dataset(load_dataset(root / CAPTION_FILE), vocab, 5).save(root / CAPTIONS_FILE)
    np.save(root / EMBEDDINGS_FILE, np.zeros((len(vocab), 4), dtype=np.float32))
    write_json(root / VOCAB_METRICS, {"vocab_size": len(vocab), "embedding_dim": 4})


def truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def checkpoint(root: Path) -> Path:
    config = DecoderConfig(vocab_size=7, embed_dim=4, encoder_channels=8, projection_size=6,
                           hidden_size=5, attention="I", attention_size=3, dropout=0.0)
    save_checkpoint(root / CHECKPOINT_FILE, CaptionDecoder(config), epoch=1, val_bleu4=0.0)
    return root / CHECKPOINT_FILE


def vocab_file(root: Path, name: Path) -> Path:
    vocab_outputs(root)
    return root / name


LOADERS: dict[str, tuple[Callable[[Path], Path], Callable[[Path], None], Callable[[Path], object],
                         str, str]] = {
    # case: (make the file, damage it, load it, the message, the stage that writes it)
    "decoder.pt truncated": (checkpoint, truncated, load_checkpoint, "damaged or incomplete (",
                             "train"),
    "decoder.pt empty": (checkpoint, lambda p: p.write_bytes(b""), load_checkpoint,
                         "damaged or incomplete (", "train"),
    "decoder.pt missing": (checkpoint, Path.unlink, load_checkpoint, "not found", "train"),
    "captions.npz truncated": (lambda r: vocab_file(r, CAPTIONS_FILE), truncated,
                               EncodedCaptions.load, "damaged or incomplete (", "vocab"),
    "vocab.json truncated": (lambda r: vocab_file(r, VOCAB_FILE), truncated, Vocabulary.load,
                             "damaged or incomplete (JSONDecodeError", "vocab"),
    "vocab.json of another structure": (lambda r: vocab_file(r, VOCAB_FILE),
                                        lambda p: p.write_text('{"words": 3}'), Vocabulary.load,
                                        "damaged or incomplete (ValueError", "vocab"),
    "captions.npz without tokens": (lambda r: vocab_file(r, CAPTIONS_FILE),
                                    lambda p: p.write_bytes(npz(filenames=np.array(["a"]))),
                                    EncodedCaptions.load, "damaged or incomplete (ValueError: no "
                                    "splits, tokens, image_index in it)", "vocab"),
}


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@pytest.mark.parametrize(("make", "damage", "load", "message", "stage"), LOADERS.values(),
                         ids=LOADERS.keys())
def test_a_damaged_output_is_one_line_naming_it_and_its_stage(tmp_path, make, damage, load,
                                                              message, stage):
    from imcap.loading import OutputFileError  # imported here: before the fix it fails alone

    path = make(tmp_path)
    damage(path)
    with pytest.raises(OutputFileError) as error:
        load(path)
    text = str(error.value)
    assert text.startswith(f"{path}: {message}")
    assert text.endswith(f"the {stage} stage writes it: `dvc repro -f -s {stage}`")
    assert "\n" not in text


@pytest.mark.parametrize("damaged", [CAPTIONS_FILE, EMBEDDINGS_FILE, VOCAB_METRICS, VOCAB_FILE],
                         ids=lambda path: path.name if path != VOCAB_METRICS else "metrics")
def test_the_train_stage_says_which_input_is_damaged_in_one_line(tmp_path, monkeypatch, capsys,
                                                                  damaged):
    from stages import train

    monkeypatch.chdir(tmp_path)
    write_params(tmp_path / "params.yaml", {"mlflow": {"enabled": False}})
    vocab_outputs(tmp_path)
    truncated(damaged)
    with pytest.raises(SystemExit) as exit_:
        run_stage("train", train.main)
    assert exit_.value.code == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"train: {damaged}: damaged or incomplete (")
    assert line.endswith("`dvc repro -f -s vocab`")


def test_a_cuda_error_while_loading_a_checkpoint_is_not_taken_for_damage(tmp_path,
                                                                          monkeypatch):
    """The file is read on the CPU, then moved: running out of GPU memory (or a driver fault)
    there is the GPU's problem, never "damaged, rerun the stage"."""
    path = checkpoint(tmp_path)

    def no_memory(self: torch.nn.Module, *args: object, **kwargs: object) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has "
                                     "a total capacity of 79.19 GiB of which 1.2 GiB is free.")

    monkeypatch.setattr(CaptionDecoder, "to", no_memory)
    with pytest.raises(torch.OutOfMemoryError):
        load_checkpoint(path, "cuda")


def test_a_good_checkpoint_still_loads(tmp_path):
    model = load_checkpoint(checkpoint(tmp_path))
    assert isinstance(model, torch.nn.Module) and not model.training
