"""The `imcap` command. `imcap caption IMG|DIR [...]` captions your own images with the trained
decoder, its vocabulary and the encoder its features came from — read from this repository's
DVC outputs (default) or from an MLflow run (`--run-id`) — and can draw the seed's per-word
attention figure (`--attention-map out.png`)."""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image

from imcap.data.karpathy import image_root
from imcap.data.vocab import Vocabulary
from imcap.devices import pick_device
from imcap.evaluation.attention_maps import caption_steps, draw_attention, encoder_view
from imcap.features.encoders import build_encoder
from imcap.features.images import ImageReadError, image_transform, load_rgb
from imcap.features.store import FeatureStore
from imcap.model.captioning import Decode, beam_decoder, caption_batches
from imcap.model.checkpoint import load_checkpoint
from imcap.model.decode import sample_decode
from imcap.model.decoder import CaptionDecoder
from imcap.paths import CAPTION_FILE, CHECKPOINT_FILE, FEATURES_FILE, VOCAB_FILE
from imcap.stage import is_user_error

IMAGE_SUFFIXES = frozenset(ext for ext, fmt in Image.registered_extensions().items()
                           if fmt in Image.OPEN)
ENCODER_TOLERANCE = 1e-2  # relative difference of pooled features still taken as "the same"
# What loading a damaged file raises: truncated zip (RuntimeError, OSError), empty (EOFError),
# bad pickle, bad JSON or encoding (ValueError), wrong structure (KeyError, TypeError).
DAMAGED_FILE_ERRORS = (OSError, EOFError, pickle.UnpicklingError, ValueError, KeyError,
                       TypeError, RuntimeError)
T = TypeVar("T")


class CliError(Exception):
    """A problem the user can fix: printed as `imcap caption: error: ...`, exit status 1."""


@dataclass(frozen=True)
class Artifacts:
    """What captioning new images needs, and where it came from."""

    checkpoint: Path
    vocab: Path
    encoder: str
    weights: str
    image_size: int
    reference: FeatureStore | None = None  # stored features to check the rebuilt encoder with
    reference_images: Path | None = None  # the directory of the images in `reference`


@dataclass(frozen=True)
class Caption:
    image: Path
    words: list[str]
    maps: np.ndarray | None  # [len(labels), R] attention per panel, None without attention
    labels: list[str]  # the words, then `<end>` when the caption ended with EOS


@dataclass(frozen=True)
class Decoding:
    """How to pick the words: beam search of size `beam`, or sampling (`sample`)."""

    beam: int
    length_penalty: float
    sample: bool
    temperature: float
    top_k: int
    max_length: int
    min_length: int
    generator: torch.Generator | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace, device: torch.device) -> Decoding:
        problems = [f"--{name.replace('_', '-')} must be {rule}, got {value}"
                    for name, value, ok, rule in (
                        ("beam", args.beam, args.beam >= 1, ">= 1"),
                        ("length_penalty", args.length_penalty, args.length_penalty >= 0, ">= 0"),
                        ("temperature", args.temperature, args.temperature > 0, "> 0"),
                        ("top_k", args.top_k, args.top_k >= 0, ">= 0"),
                        ("max_length", args.max_length, args.max_length >= 1, ">= 1"),
                        ("min_length", args.min_length,
                         0 <= args.min_length <= args.max_length, "between 0 and --max-length"),
                        ("batch_size", args.batch_size, args.batch_size >= 1, ">= 1"))
                    if not ok]
        if problems:
            raise CliError("; ".join(problems))
        generator = (torch.Generator(device=device).manual_seed(args.seed) if args.sample
                     else None)
        return cls(args.beam, args.length_penalty, args.sample, args.temperature, args.top_k,
                   args.max_length, args.min_length, generator)

    def decoder(self, model: CaptionDecoder) -> Decode:
        if self.sample:
            return partial(sample_decode, model, max_length=self.max_length,
                           temperature=self.temperature, top_k=self.top_k,
                           min_length=self.min_length, generator=self.generator)
        return beam_decoder(model, self.beam, self.max_length, min_length=self.min_length,
                            length_penalty=self.length_penalty)


def dvc_artifacts(root: Path) -> Artifacts:
    """The outputs of `dvc repro` in the repository at `root`."""
    paths = [root / CHECKPOINT_FILE, root / VOCAB_FILE, root / FEATURES_FILE]
    for path in paths:
        if not path.is_file():
            raise CliError(f"{path}: not found; run `dvc repro` first, or pass --run-id")
    store = FeatureStore(paths[2])
    caption_file = root / CAPTION_FILE
    images = image_root(caption_file) if caption_file.is_file() else None
    return Artifacts(paths[0], paths[1], str(store.attrs["encoder"]),
                     str(store.attrs["weights"]), int(store.attrs["image_size"]), store, images)


def mlflow_artifacts(run_id: str, dest: Path) -> Artifacts:
    """`decoder.pt` and `vocab.json` logged by the train stage, and the encoder params."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # stdout: captions
    import mlflow
    from mlflow.exceptions import MlflowException

    from imcap.tracking import tracking_uri

    uri = tracking_uri()
    require_store(uri)
    try:
        params = mlflow.MlflowClient(uri).get_run(run_id).data.params
        files = [Path(mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=name, dst_path=str(dest), tracking_uri=uri))
            for name in (CHECKPOINT_FILE.name, VOCAB_FILE.name)]
    except MlflowException as err:
        raise CliError(f"MLflow run {run_id} in {uri}: {err.message}") from err
    needed = ("encoder", "features.weights", "features.image_size")
    missing = [key for key in needed if key not in params]
    if missing:
        raise CliError(f"MLflow run {run_id} lacks the params {', '.join(missing)}; "
                       "was it logged by the train stage?")
    return Artifacts(files[0], files[1], params["encoder"], params["features.weights"],
                     int(params["features.image_size"]))


def require_store(uri: str) -> None:
    """Refuse a SQLite store that does not exist: MLflow would create an empty one there."""
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        if not db.is_file():
            raise CliError(f"no MLflow store at {db}: run the pipeline with mlflow.enabled "
                           "here, or set MLFLOW_TRACKING_URI to the store that holds the run")


def load_file(path: Path, load: Callable[[Path], T]) -> T:
    """`load(path)`, a damaged file reported in one line that names it."""
    try:
        return load(path)
    except DAMAGED_FILE_ERRORS as err:
        detail = next(iter(str(err).splitlines()), "")  # torch's messages run to paragraphs
        raise CliError(f"{path}: damaged or incomplete ({type(err).__name__}: {detail}); "
                       "rerun the stage that writes it") from err


def image_files(arguments: Sequence[str]) -> list[Path]:
    """Files as given; a directory stands for the images in it (by suffix, sorted)."""
    paths: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found = sorted(p for p in path.iterdir()
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise CliError(f"{path}: directory holds no images")
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            raise CliError(f"{path}: no such file or directory")
    return paths


class Captioner:
    """Encoder + decoder + vocabulary on one device."""

    def __init__(self, artifacts: Artifacts, device: torch.device) -> None:
        self.device = device
        self.model = load_file(artifacts.checkpoint, partial(load_checkpoint, device=device))
        self.vocab = load_file(artifacts.vocab, Vocabulary.load)
        self.encoder = build_encoder(artifacts.encoder, artifacts.weights).to(device)
        self.transform = image_transform(artifacts.image_size, artifacts.encoder,
                                         artifacts.weights)
        if self.encoder.feature_dim != self.model.config.encoder_channels:
            raise CliError(f"{artifacts.checkpoint}: the decoder expects "
                           f"{self.model.config.encoder_channels} feature channels, the "
                           f"{artifacts.encoder} encoder gives {self.encoder.feature_dim}")
        if len(self.vocab) != self.model.config.vocab_size:
            raise CliError(f"{artifacts.vocab}: {len(self.vocab)} words, but the decoder in "
                           f"{artifacts.checkpoint} has {self.model.config.vocab_size}")
        if artifacts.reference is not None and artifacts.reference_images is not None:
            self._check_encoder(artifacts)

    @torch.inference_mode()
    def encode(self, paths: Sequence[Path]) -> tuple[torch.Tensor, torch.Tensor]:
        return self._encode([self.transform(load_rgb(path)) for path in paths])

    def _encode(self, images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(torch.stack(images).to(self.device))

    def _check_encoder(self, artifacts: Artifacts) -> None:
        """Encode the first image of the feature store again and compare: a decoder fed
        features of a different encoder would caption confidently and wrongly."""
        store = artifacts.reference
        image = artifacts.reference_images / store.filenames[0]
        if not image.is_file():
            return
        _, pooled = self.encode([image])
        stored = torch.from_numpy(store.load(np.array([0]))[1]).to(self.device)
        difference = float((pooled - stored).norm() / stored.norm().clamp_min(1e-12))
        if difference > ENCODER_TOLERANCE:
            raise CliError(
                f"the {artifacts.encoder} encoder (weights {artifacts.weights}) rebuilt here does "
                f"not reproduce the features {store.path} holds for {image} (relative "
                f"difference {difference:.2g}): the decoder was trained on another encoder's "
                "features. A randomly initialised encoder (features.weights: none) can only be "
                "rebuilt when its initialisation is seeded.")

    @torch.inference_mode()
    def caption(self, paths: Sequence[Path], decoding: Decoding, batch_size: int
                ) -> Iterator[Caption | ImageReadError]:
        """For each image in order, its caption or the error that names why it could not be
        read; `batch_size` readable images encoded and decoded at a time."""
        read: deque[Path | ImageReadError] = deque()  # each image as read, awaiting its caption

        def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for start in range(0, len(paths), batch_size):
                images = []
                for path in paths[start : start + batch_size]:
                    try:
                        images.append(self.transform(load_rgb(path)))
                        read.append(path)
                    except ImageReadError as err:
                        read.append(err)
                if images:
                    yield self._encode(images)

        for caption in caption_batches(decoding.decoder(self.model), batches(), self.vocab):
            while isinstance(read[0], ImageReadError):
                yield read.popleft()
            labels, maps = caption_steps(caption.words, caption.alphas, caption.ended)
            yield Caption(read.popleft(), caption.words, maps, labels)
        yield from read  # unreadable images after the last readable one


def map_paths(out: Path, images: Sequence[Path]) -> list[Path]:
    """`out` for one image; `<out stem>-<image stem><suffix>` beside it for several."""
    if len(images) == 1:
        return [out]
    paths, used = [], set()
    for image in images:
        name, n = f"{out.stem}-{image.stem}", 1
        while name in used:
            n += 1
            name = f"{out.stem}-{image.stem}-{n}"
        used.add(name)
        paths.append(out.with_name(name + out.suffix))
    return paths


def attention_outputs(out: Path, images: Sequence[Path]) -> list[Path]:
    """The figure files for `--attention-map out`, refused before any work where a file cannot
    be: an existing directory (never replaced), a parent that is not a directory."""
    if out.is_dir():
        raise CliError(f"--attention-map {out}: is a directory; name the figure file (OUT.png)")
    paths = map_paths(out, images)
    for path in paths:
        if path.is_dir():
            raise CliError(f"{path}: is a directory; choose another --attention-map name")
    folder = next(p for p in out.absolute().parents if p.exists())
    if not folder.is_dir():
        raise CliError(f"--attention-map {out}: {folder} is not a directory")
    return paths


def caption_command(args: argparse.Namespace) -> None:
    try:
        device = pick_device(args.device)
    except RuntimeError as err:
        raise CliError(str(err)) from err
    decoding = Decoding.from_args(args, device)
    images = image_files(args.images)
    outs = attention_outputs(Path(args.attention_map), images) if args.attention_map else []
    with tempfile.TemporaryDirectory(prefix="imcap-run-") as tmp:
        artifacts = (mlflow_artifacts(args.run_id, Path(tmp)) if args.run_id
                     else dvc_artifacts(Path(args.root)))
        captioner = Captioner(artifacts, device)
    if args.attention_map and captioner.model.attention is None:
        raise CliError("the model has no attention (attention: none): no attention map to draw")
    unreadable = []
    for i, caption in enumerate(captioner.caption(images, decoding, args.batch_size)):
        if isinstance(caption, ImageReadError):
            unreadable.append(str(caption))
            continue
        print(f"{caption.image}\t{' '.join(caption.words)}", flush=True)
        if outs:
            shown = encoder_view(load_rgb(caption.image), captioner.transform.spec)
            try:
                draw_attention(shown, caption.labels, caption.maps, outs[i],
                               title=f"{caption.image.name}: {' '.join(caption.words)}")
            except OSError as err:
                raise CliError(f"{outs[i]}: cannot write the attention map ({err})") from err
            print(f"attention map: {outs[i]}", file=sys.stderr)
    if unreadable:
        raise CliError(f"{len(unreadable)} of {len(images)} images could not be read:\n  "
                       + "\n  ".join(unreadable))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imcap", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    caption = commands.add_parser(
        "caption", help="caption images with the trained model",
        description="Caption images (files or directories of images) with the trained model.")
    caption.add_argument("images", nargs="+", metavar="IMG", help="image file or directory")
    caption.add_argument("--beam", type=int, default=3, help="beam size; 1 = greedy (default 3)")
    caption.add_argument("--length-penalty", type=float, default=0.5,
                         help="beam: rank finished captions by log P / length**ALPHA "
                              "(default 0.5, as eval.length_penalty)")
    caption.add_argument("--sample", action="store_true",
                         help="sample words instead of beam search")
    caption.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    caption.add_argument("--top-k", type=int, default=0,
                         help="sample from the K most likely words only (0 = all)")
    caption.add_argument("--seed", type=int, default=0, help="sampling seed")
    caption.add_argument("--max-length", type=int, default=20, help="most words (default 20)")
    caption.add_argument("--min-length", type=int, default=0, help="fewest words (default 0)")
    caption.add_argument("--attention-map", metavar="OUT.png",
                         help="draw the per-word attention figure (several images: "
                              "OUT-<image>.png)")
    caption.add_argument("--run-id", help="load the model from this MLflow run's artifacts "
                                          "instead of the DVC outputs")
    caption.add_argument("--root", default=".",
                         help="repository whose DVC outputs hold the model (default .)")
    caption.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    caption.add_argument("--batch-size", type=int, default=16, help="images per batch")
    caption.set_defaults(run=caption_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except Exception as err:
        if not is_user_error(err):
            raise
        print(f"imcap {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
