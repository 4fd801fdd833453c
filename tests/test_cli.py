"""`imcap caption` (imcap.cli) on a miniature project: a tiny deterministic encoder, a random
decoder, real feature store, vocabulary and checkpoint files in the DVC output layout."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from local_process import free_port
from params_overrides import cpu_features, merged, write_params
from PIL import Image
from torch import nn

from imcap import captioner, cli
from imcap.data.vocab import SPECIALS, Vocabulary
from imcap.features import extraction as features
from imcap.features.encoders import Encoder
from imcap.features.extraction import extract_features
from imcap.features.images import image_transform
from imcap.model.beam import beam_search
from imcap.model.checkpoint import load_checkpoint, save_checkpoint
from imcap.model.constraints import DecodingRules
from imcap.model.decoder import CaptionDecoder, DecoderConfig
from imcap.model.registry import build_decoder
from imcap.params_base import flatten
from imcap.paths import CAPTION_FILE, CHECKPOINT_FILE, FEATURES_FILE, IMAGES_DIR, VOCAB_FILE

WORDS = ("a", "red", "blue", "circle", "square", "left", "right", "top")
IMAGE_SIZE = 32


def tiny_encoder(seed: int = 0) -> Encoder:
    """A 4×4 grid of 16 channels: small, and the same for the same seed."""
    torch.manual_seed(seed)
    return Encoder(nn.Sequential(nn.Conv2d(3, 16, kernel_size=8, stride=8), nn.Tanh()), 16).eval()


def write_images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def make_project(root: Path, monkeypatch: pytest.MonkeyPatch, attention: str = "I",
                 params: dict | None = None, decoder: str = "lstm") -> Path:
    """data/dataset, data/vocab/vocab.json, data/features/features.h5, data/model/decoder.pt,
    and params.yaml: the repository's with `params` merged in."""
    monkeypatch.setattr(features, "build_encoder", lambda name, weights, size: tiny_encoder())
    monkeypatch.setattr(captioner, "build_encoder", lambda name, weights, size: tiny_encoder())
    images = write_images(root / IMAGES_DIR, 3)
    (root / CAPTION_FILE).write_text(json.dumps({"images": [], "image_root": "images"}))
    extract_features(root / IMAGES_DIR, [p.name for p in images], root / FEATURES_FILE,
                     "resnet18", cpu_features(image_size=IMAGE_SIZE, dtype="float32"))
    vocab = Vocabulary(SPECIALS + WORDS)
    vocab.save(root / VOCAB_FILE)
    torch.manual_seed(1)
    config = DecoderConfig(vocab_size=len(vocab), embed_dim=8, encoder_channels=16,
                           projection_size=12, hidden_size=10, attention=attention,
                           attention_size=6, dropout=0.0, decoder=decoder)
    save_checkpoint(root / CHECKPOINT_FILE, build_decoder(config).eval(), epoch=1,
                    val_bleu4=0.0)
    write_params(root / "params.yaml", params or {})
    return root


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return make_project(tmp_path / "repo", monkeypatch)


def run(capsys: pytest.CaptureFixture, *argv: str | Path) -> tuple[int, str, str]:
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def expected_captions(project: Path, images: list[Path], beam: int, max_length: int = 20,
                      length_penalty: float = 0.0, **options: Any) -> list[str]:
    """The same captions straight from the library (`options`: beam search's `groups`,
    `diversity`, and the rules' `block_trigrams`, `remove_bad_endings`)."""
    model = load_checkpoint(project / CHECKPOINT_FILE)
    vocab = Vocabulary.load(project / VOCAB_FILE)
    transform = image_transform(IMAGE_SIZE)
    with torch.no_grad():
        grid, pooled = tiny_encoder()(torch.stack([transform(Image.open(p).convert("RGB"))
                                                   for p in images]))
    rules = DecodingRules.from_vocab(vocab,
                                     block_trigrams=options.pop("block_trigrams", False),
                                     remove_bad_endings=options.pop("remove_bad_endings", False))
    tokens = beam_search(model, grid, pooled, beam, max_length, length_penalty=length_penalty,
                         rules=rules, **options).tokens
    return [" ".join(vocab.decode(row)) for row in tokens.tolist()]


def test_captions_files_and_every_image_of_a_directory(project, tmp_path, capsys):
    mine = write_images(tmp_path / "mine", 2, seed=7)
    single = write_images(tmp_path / "single", 1, seed=8)[0]
    status, out, err = run(capsys, "caption", single, tmp_path / "mine", "--root", project,
                           "--beam", "2")
    assert status == 0, err
    lines = [line.split("\t") for line in out.splitlines()]
    assert [Path(path) for path, _ in lines] == [single, *mine]
    assert [caption for _, caption in lines] == expected_captions(project, [single, *mine], 2)


def test_attention_maps_one_file_per_image(project, tmp_path, capsys):
    images = write_images(tmp_path / "mine", 2, seed=3)
    status, _, err = run(capsys, "caption", images[0], "--root", project, "--max-length", "5",
                         "--attention-map", tmp_path / "att.png")
    assert status == 0, err
    assert f"attention map: {tmp_path / 'att.png'}" in err
    with Image.open(tmp_path / "att.png") as figure:  # one row of panels: one per word
        assert figure.format == "PNG" and figure.width > 2 * figure.height > 0
    (tmp_path / "out").mkdir()
    status, _, err = run(capsys, "caption", *images, "--root", project, "--max-length", "3",
                         "--attention-map", tmp_path / "out" / "att.png")
    assert status == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["att-img0.png",
                                                                     "att-img1.png"]


def test_an_updown_model_captions_and_draws_its_attention(tmp_path, monkeypatch, capsys):
    project = make_project(tmp_path / "repo", monkeypatch, decoder="updown",
                           params={"decoder": "updown"})
    images = write_images(tmp_path / "mine", 2, seed=5)
    status, out, err = run(capsys, "caption", *images, "--root", project, "--beam", "3",
                           "--max-length", "4", "--attention-map", tmp_path / "att.png")
    assert status == 0, err
    assert [line.split("\t")[1] for line in out.splitlines()] == expected_captions(
        project, images, 3, max_length=4)
    assert sorted(p.name for p in tmp_path.glob("att-*.png")) == ["att-img0.png", "att-img1.png"]


def test_a_file_that_is_not_an_image_fails_naming_it(project, tmp_path, capsys):
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    status, out, err = run(capsys, "caption", text, "--root", project)
    assert status == 1 and out == ""
    assert f"{text}: cannot read image" in err


@pytest.mark.parametrize(("make", "message"), [
    (lambda tmp: tmp / "missing.jpg", "missing.jpg: no such file or directory"),
    (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "empty: directory holds no images"),
    (lambda tmp: (tmp / "loop.jpg").symlink_to("loop.jpg") or tmp / "loop.jpg",
     "loop.jpg: too many levels of symbolic links"),
    (lambda tmp: os.mkfifo(tmp / "pipe.jpg") or tmp / "pipe.jpg",
     "pipe.jpg: not a regular file (a FIFO)"),
])
def test_missing_files_and_empty_directories_fail_clearly(project, tmp_path, capsys, make,
                                                          message):
    status, _, err = run(capsys, "caption", make(tmp_path), "--root", project)
    assert status == 1 and message in err


def test_without_dvc_outputs_it_says_what_to_run(tmp_path, capsys):
    image = write_images(tmp_path / "mine", 1)[0]
    status, _, err = run(capsys, "caption", image, "--root", tmp_path / "nothing")
    assert status == 1
    assert "decoder.pt: not found; run `dvc repro` first, or pass --run-id" in err


def test_an_encoder_that_does_not_reproduce_the_features_is_refused(project, capsys,
                                                                    monkeypatch):
    monkeypatch.setattr(captioner, "build_encoder",
                        lambda name, weights, size: tiny_encoder(seed=99))
    status, _, err = run(capsys, "caption", project / IMAGES_DIR / "img0.png", "--root", project)
    assert status == 1
    assert "does not reproduce the features" in err and "img0.png" in err


def test_attention_map_needs_a_model_with_attention(tmp_path, monkeypatch, capsys):
    project = make_project(tmp_path / "repo", monkeypatch, attention="none")
    image = project / IMAGES_DIR / "img0.png"
    status, out, _ = run(capsys, "caption", image, "--root", project)
    assert status == 0 and out.startswith(str(image))
    status, _, err = run(capsys, "caption", image, "--root", project, "--attention-map",
                         tmp_path / "a.png")
    assert status == 1 and "no attention map" in err


def test_sampling_is_repeatable_with_a_seed(project, capsys):
    images = sorted((project / IMAGES_DIR).iterdir())
    runs = [run(capsys, "caption", *images, "--root", project, "--sample", "--temperature",
                "2", "--seed", seed) for seed in ("1", "1", "2")]
    assert all(status == 0 for status, _, _ in runs)
    assert runs[0][1] == runs[1][1]


@pytest.mark.parametrize(("flags", "message"), [
    (["--beam", "0"], "--beam must be >= 1"),
    (["--temperature", "0"], "--temperature must be between 0.001 and 1000.0, got 0.0"),
    (["--sample", "--temperature", "inf"], "--temperature must be between 0.001 and 1000.0"),
    (["--sample", "--temperature", "nan"], "--temperature must be between 0.001 and 1000.0"),
    (["--sample", "--temperature", "1e-40"], "--temperature must be between 0.001 and 1000.0"),
    (["--length-penalty", "inf"], "--length-penalty must be a finite number >= 0, got inf"),
    (["--min-length", "5", "--max-length", "3"], "--min-length must be between 0 and"),
])
def test_bad_settings_fail_before_any_work(project, capsys, flags, message):
    status, _, err = run(capsys, "caption", project / IMAGES_DIR, "--root", project, *flags)
    assert status == 1 and message in err


ENCODER_AS_LOGGED = {"encoder": "resnet18", "features.weights": "none",
                     "features.image_size": IMAGE_SIZE}  # the project's features


def log_model_run(project, tmp_path, monkeypatch, params: dict | None = None,
                  logged: dict = ENCODER_AS_LOGGED) -> str:
    """A run in a fresh SQLite store (MLFLOW_TRACKING_URI) holding what the train stage logs
    for `imcap caption --run-id`: every param (the repository's with `params` merged in, then
    `logged`), decoder.pt and vocab.json."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("t", artifact_location=(tmp_path / "art").as_uri())
    with mlflow.start_run(experiment_id=experiment) as active:
        mlflow.log_params(flatten(merged(params or {})) | logged)
        mlflow.log_artifact(str(project / CHECKPOINT_FILE))
        mlflow.log_artifact(str(project / VOCAB_FILE))
    return active.info.run_id


def test_model_from_an_mlflow_run(project, tmp_path, monkeypatch, capsys):
    run_id = log_model_run(project, tmp_path, monkeypatch)
    image = project / IMAGES_DIR / "img1.png"
    status, out, err = run(capsys, "caption", image, "--run-id", run_id,
                           "--root", tmp_path / "elsewhere", "--beam", "3")
    assert status == 0, err
    assert out == f"{image}\t{expected_captions(project, [image], 3)[0]}\n"
    status, _, err = run(capsys, "caption", image, "--run-id", "0" * 32)
    assert status == 1 and f"MLflow run {'0' * 32}" in err


def test_a_train_run_of_the_default_params_captions(tmp_path, monkeypatch, capsys):
    """The train stage logs params.yaml as it is: `features.image_size: auto` (the default),
    which stands for `shapes.encoder_input_size` on shapes, as the features stage resolved it."""
    params = {"shapes": {"encoder_input_size": IMAGE_SIZE}}  # the size of the project's features
    project = make_project(tmp_path / "repo", monkeypatch, params=params)
    run_id = log_model_run(project, tmp_path, monkeypatch, params=params, logged={})
    image = project / IMAGES_DIR / "img1.png"
    status, out, err = run(capsys, "caption", image, "--run-id", run_id,
                           "--root", tmp_path / "elsewhere", "--beam", "3")
    assert status == 0, err
    assert out == f"{image}\t{expected_captions(project, [image], 3)[0]}\n"


SHORT = {"eval": {"beams": [1, 2], "max_length": 2, "length_penalty": 1.0}}  # default beam 2


def test_decoding_options_left_out_take_the_projects_eval_params(tmp_path, monkeypatch, capsys):
    project = make_project(tmp_path / "repo", monkeypatch, params=SHORT)
    image = project / IMAGES_DIR / "img0.png"
    status, out, err = run(capsys, "caption", image, "--root", project)
    assert status == 0, err
    caption = out.split("\t", 1)[1].strip()
    assert caption == expected_captions(project, [image], 2, max_length=2, length_penalty=1.0)[0]
    assert len(caption.split()) <= 2
    status, out, _ = run(capsys, "caption", image, "--root", project, "--max-length", "5")
    assert out.split("\t", 1)[1].strip() == expected_captions(project, [image], 2, max_length=5,
                                                              length_penalty=1.0)[0]


DIVERSE = {"eval": {"beams": [2, 4], "block_trigrams": True, "remove_bad_endings": True,
                    "beam_groups": 2, "diversity_lambda": 2.0}}  # default beam 4


def lines(images: list[Path], captions: list[str]) -> str:
    return "".join(f"{image}\t{caption}\n" for image, caption in zip(images, captions,
                                                                      strict=True))


def test_the_decoding_rules_and_diverse_beam_search_are_the_models_defaults(tmp_path, monkeypatch,
                                                                           capsys):
    project = make_project(tmp_path / "repo", monkeypatch, params=DIVERSE)
    images = write_images(tmp_path / "mine", 6, seed=11)
    lp = merged({})["eval"]["length_penalty"]
    status, out, err = run(capsys, "caption", *images, "--root", project)
    assert status == 0, err
    diverse = expected_captions(project, images, 4, length_penalty=lp, groups=2, diversity=2.0,
                                block_trigrams=True, remove_bad_endings=True)
    assert out == lines(images, diverse)
    plain = expected_captions(project, images, 4, length_penalty=lp)
    assert plain != diverse  # the options change some caption: the defaults were applied
    status, out, err = run(capsys, "caption", *images, "--root", project, "--beam-groups", "1",
                           "--diversity-lambda", "0", "--no-block-trigrams",
                           "--no-remove-bad-endings")
    assert out == lines(images, plain)
    status, out, err = run(capsys, "caption", images[0], "--root", project, "--beam", "3")
    assert (status, out) == (1, "")
    assert err == ("imcap caption: error: --beam-groups must be >= 1 and divide --beam (3), "
                   "got 2\n")


def test_a_run_decodes_as_its_logged_params_say(project, tmp_path, monkeypatch, capsys):
    run_id = log_model_run(project, tmp_path, monkeypatch, params=SHORT)
    image = project / IMAGES_DIR / "img1.png"
    status, out, err = run(capsys, "caption", image, "--run-id", run_id,
                           "--root", tmp_path / "elsewhere")
    assert status == 0, err
    assert out == (f"{image}\t"
                   f"{expected_captions(project, [image], 2, 2, length_penalty=1.0)[0]}\n")


def test_an_existing_directory_is_never_taken_for_the_attention_map(project, tmp_path, capsys):
    folder = tmp_path / "maps"
    folder.mkdir()
    (folder / "mine.png").write_bytes(b"precious")
    images = sorted((project / IMAGES_DIR).iterdir())
    for given in (images[:1], images):
        status, out, err = run(capsys, "caption", *given, "--root", project, "--attention-map",
                               folder)
        assert (status, out) == (1, "")
        assert f"--attention-map {folder}: is a directory" in err
    assert [p.name for p in folder.iterdir()] == ["mine.png"]
    (tmp_path / "att-img1.png").mkdir()  # the name the second image's figure would take
    status, out, err = run(capsys, "caption", *images, "--root", project, "--attention-map",
                           tmp_path / "att.png")
    assert (status, out) == (1, "")
    assert f"{tmp_path / 'att-img1.png'}: is a directory" in err


@pytest.mark.parametrize("out", ["/dev/null/x.png", "/dev/null/sub/x.png"])
def test_an_attention_map_where_no_file_can_be_fails_in_one_line(project, capsys, out):
    status, captions, err = run(capsys, "caption", project / IMAGES_DIR / "img0.png", "--root",
                                project, "--attention-map", out)
    assert (status, captions) == (1, "")
    assert err == f"imcap caption: error: --attention-map {out}: /dev/null is not a directory\n"


def test_an_attention_map_in_a_missing_directory_is_refused_not_made(project, tmp_path, capsys):
    out = tmp_path / "nonexistent_dir" / "x.png"
    status, captions, err = run(capsys, "caption", project / IMAGES_DIR / "img0.png", "--root",
                                project, "--attention-map", out)
    assert (status, captions) == (1, "")
    assert err == (f"imcap caption: error: --attention-map {out}: no directory {out.parent}; "
                   "create it first\n")
    assert not out.parent.exists()


def test_unreadable_files_are_listed_and_the_others_captioned(project, tmp_path, capsys):
    """A macOS `._x.jpg` (AppleDouble metadata) or a broken file must not abort the batch."""
    folder = tmp_path / "mine"
    good = write_images(folder, 3, seed=5)
    bad = [folder / name for name in ("._img0.jpg", "img0a.png", "img0b.png", "zz.png")]
    bad[0].write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(64))
    for path in bad[1:]:
        path.write_bytes(good[0].read_bytes()[:60])  # truncated PNGs
    # In batches of 2: [._img0, img0] [img0a, img0b] [img1, img2] [zz]
    (tmp_path / "maps").mkdir()
    status, out, err = run(capsys, "caption", folder, "--root", project, "--batch-size", "2",
                           "--beam", "2", "--attention-map", tmp_path / "maps" / "att.png")
    assert status == 1
    lines = [line.split("\t") for line in out.splitlines()]
    assert [Path(path) for path, _ in lines] == good
    assert [caption for _, caption in lines] == expected_captions(project, good, 2)
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == [
        "att-img0.png", "att-img1.png", "att-img2.png"]
    assert "imcap caption: error: 4 of 7 images could not be read:\n" in err
    assert all(f"  {path}: cannot read image" in err for path in bad)


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


@pytest.mark.parametrize(("name", "damage"), [
    (FEATURES_FILE, truncated),
    (CHECKPOINT_FILE, truncated),
    (CHECKPOINT_FILE, lambda data: data[:100]),
    (CHECKPOINT_FILE, lambda data: b""),
    (CHECKPOINT_FILE, lambda data: b"not a checkpoint" * 10),
    (VOCAB_FILE, truncated),
    (VOCAB_FILE, lambda data: b'{"words": 3}'),
], ids=["features.h5 truncated", "decoder.pt truncated", "decoder.pt cut at 100 bytes",
        "decoder.pt empty", "decoder.pt garbage", "vocab.json truncated", "vocab.json wrong"])
def test_a_damaged_model_file_fails_in_one_line_naming_it(project, capsys, name, damage):
    path = project / name
    path.write_bytes(damage(path.read_bytes()))
    status, out, err = run(capsys, "caption", project / IMAGES_DIR / "img0.png", "--root",
                           project)
    assert (status, out) == (1, "")
    [line] = err.splitlines()
    assert line.startswith(f"imcap caption: error: {path}: ")


@pytest.mark.parametrize("command", [["caption", "IMAGE", "--run-id", "models:/imcap/1"],
                                     ["caption", "IMAGE", "--run-id", "0" * 32],
                                     ["compare", "0" * 32, "1" * 32]],
                         ids=["caption models:/", "caption run", "compare"])
def test_a_damaged_mlflow_store_is_one_line_naming_it(tmp_path, monkeypatch, capsys, command):
    store = tmp_path / "mlflow.db"
    store.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 64)  # a header, then garbage
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    image = write_images(tmp_path / "mine", 1)[0]
    status, out, err = run(capsys, *(image if arg == "IMAGE" else arg for arg in command),
                           "--root", tmp_path)
    assert (status, out) == (1, "")
    assert err == (f"imcap {command[0]}: error: the MLflow store sqlite:///{store} cannot be "
                   "read ((sqlite3.DatabaseError) file is not a database); repair it or move "
                   "it aside, or set MLFLOW_TRACKING_URI to a working store\n")



@pytest.mark.parametrize("command", [["caption", "IMAGE", "--run-id", "models:/imcap/1"],
                                     ["caption", "IMAGE", "--run-id", "0" * 32],
                                     ["compare", "0" * 32, "1" * 32]],
                         ids=["caption models:/", "caption run", "compare"])
def test_a_tracking_server_that_does_not_answer_is_one_line_naming_it(tmp_path, monkeypatch,
                                                                        capsys, command):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    image = write_images(tmp_path / "mine", 1)[0]
    status, out, err = run(capsys, *(image if arg == "IMAGE" else arg for arg in command),
                           "--root", tmp_path)
    assert (status, out) == (1, "")
    assert err == (f"imcap {command[0]}: error: the MLflow server {url} does not answer "
                   "(Connection refused); start it, or set MLFLOW_TRACKING_URI to a working "
                   "one\n")

def test_a_gpu_out_of_memory_says_which_batch_size_to_lower(project, monkeypatch, capsys):
    """Raised while the checkpoint moves to the device (injected: no GPU here): not taken for a
    damaged file."""
    def no_memory(self: torch.nn.Module, *args: object, **kwargs: object) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has "
                                     "a total capacity of 79.19 GiB of which 1.2 GiB is free.")

    monkeypatch.setattr(CaptionDecoder, "to", no_memory)
    status, out, err = run(capsys, "caption", project / IMAGES_DIR, "--root", project)
    assert (status, out) == (1, "")
    assert err == ("imcap caption: error: out of GPU memory (Tried to allocate 2.00 GiB); lower "
                   "--batch-size, or free the GPU of other processes\n")


@pytest.mark.parametrize("configured", [False, True])
def test_run_id_without_a_store_creates_none(tmp_path, monkeypatch, capsys, configured):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    store = tmp_path.resolve() / ("elsewhere/runs.db" if configured else "mlflow.db")
    if configured:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    else:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    image = write_images(tmp_path / "mine", 1)[0]
    status, out, err = run(capsys, "caption", image, "--run-id", "0" * 32)
    assert (status, out) == (1, "")
    assert f"imcap caption: error: no MLflow store at {store}" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_a_failed_attention_map_write_fails_in_one_line(project, tmp_path, capsys, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cli, "draw_attention", disk_full)
    out = tmp_path / "att.png"
    status, _, err = run(capsys, "caption", project / IMAGES_DIR / "img0.png", "--root",
                         project, "--attention-map", out)
    assert status == 1
    assert err == (f"imcap caption: error: {out}: cannot write the attention map "
                   "([Errno 28] No space left on device)\n")
