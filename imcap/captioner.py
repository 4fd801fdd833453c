"""A trained captioner outside the pipeline: decoder, vocabulary and the encoder that made its
features (found by `imcap.model_lookup`), with the stages training tuned when the checkpoint
holds them (`train.finetune_encoder`), captioning image files in batches. Used by
`imcap caption`, `imcap demo` and the served MLflow model (`imcap.serving`)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imcap.data.vocab import Vocabulary
from imcap.evaluation.attention_maps import caption_steps
from imcap.evaluation.params import DecodingDefaults
from imcap.features.encoders import Encoder, build_encoder
from imcap.features.image_files import ImageReadError, load_rgb
from imcap.features.images import image_transform
from imcap.features.split_encoder import tuned_encoder
from imcap.features.store import FeatureStore
from imcap.model.checkpoint import checkpoint_encoder, load_checkpoint
from imcap.model.constraints import DecodingRules
from imcap.model.decode import sample_decode
from imcap.model.decoder import CaptionDecoder
from imcap.model.decoding_loop import Decode, beam_decoder, caption_batches

ENCODER_TOLERANCE = 1e-2  # relative difference of pooled features still taken as "the same"


class CaptionerError(Exception):
    """A problem the user can fix (missing or damaged artifacts, another encoder): `imcap`
    commands print it as one line."""


@dataclass(frozen=True)
class Artifacts:
    """What captioning new images needs, and where it came from."""

    checkpoint: Path
    vocab: Path
    encoder: str
    weights: str
    image_size: int
    defaults: DecodingDefaults  # how the model decodes unless told otherwise
    reference: FeatureStore | None = None  # stored features to check the rebuilt encoder with
    reference_images: Path | None = None  # the directory of the images in `reference`
    train_run: str | None = None  # the MLflow run that trained the model, when known


@dataclass(frozen=True)
class Caption:
    image: Path
    words: list[str]
    maps: np.ndarray | None  # [len(labels), R] attention per panel, None without attention
    labels: list[str]  # the words, then `<end>` when the caption ended with EOS


@dataclass(frozen=True)
class Decoding:
    """How to pick the words: beam search of size `beam` (in `beam_groups` groups penalised by
    `diversity_lambda`: diverse beam search), or sampling (`sample`); beam search obeys the
    decoding rules (`block_trigrams`, `remove_bad_endings`: imcap.model.constraints)."""

    beam: int
    length_penalty: float
    sample: bool
    temperature: float
    top_k: int
    max_length: int
    min_length: int
    generator: torch.Generator | None = None
    block_trigrams: bool = False
    remove_bad_endings: bool = False
    beam_groups: int = 1
    diversity_lambda: float = 0.0

    def decoder(self, model: CaptionDecoder, vocab: Vocabulary) -> Decode:
        if self.sample:
            return partial(sample_decode, model, max_length=self.max_length,
                           temperature=self.temperature, top_k=self.top_k,
                           min_length=self.min_length, generator=self.generator)
        rules = DecodingRules.from_vocab(vocab, block_trigrams=self.block_trigrams,
                                         remove_bad_endings=self.remove_bad_endings)
        return beam_decoder(model, self.beam, self.max_length, min_length=self.min_length,
                            length_penalty=self.length_penalty, groups=self.beam_groups,
                            diversity=self.diversity_lambda, rules=rules)


class Captioner:
    """Encoder + decoder + vocabulary on one device."""

    def __init__(self, artifacts: Artifacts, device: torch.device) -> None:
        self.device = device
        self.model = load_checkpoint(artifacts.checkpoint, device)  # damaged: one line
        self.vocab = Vocabulary.load(artifacts.vocab)
        self.encoder = build_encoder(artifacts.encoder, artifacts.weights,
                                     artifacts.image_size).to(device)
        self.transform = image_transform(artifacts.image_size, artifacts.encoder,
                                         artifacts.weights)
        if self.encoder.feature_dim != self.model.config.encoder_channels:
            raise CaptionerError(f"{artifacts.checkpoint}: the decoder expects "
                           f"{self.model.config.encoder_channels} feature channels, the "
                           f"{artifacts.encoder} encoder gives {self.encoder.feature_dim}")
        if len(self.vocab) != self.model.config.vocab_size:
            raise CaptionerError(f"{artifacts.vocab}: {len(self.vocab)} words, but the decoder in "
                           f"{artifacts.checkpoint} has {self.model.config.vocab_size}")
        if artifacts.reference is not None and artifacts.reference_images is not None:
            self._check_encoder(artifacts)  # the encoder the tuned stages started from
        if (tuned := checkpoint_encoder(artifacts.checkpoint)) is not None:
            self.encoder = self._tuned_encoder(tuned, artifacts)

    def _tuned_encoder(self, tuned: dict[str, Any], artifacts: Artifacts) -> Encoder:
        """The encoder with the stages training tuned, which the checkpoint holds."""
        made = (tuned["name"], tuned["weights"], int(tuned["image_size"]))
        if made != (artifacts.encoder, artifacts.weights, artifacts.image_size):
            raise CaptionerError(
                f"{artifacts.checkpoint}: its tuned encoder is {made[0]} (weights {made[1]}, "
                f"{made[2]} px), not the {artifacts.encoder} (weights {artifacts.weights}, "
                f"{artifacts.image_size} px) the model's features came from")
        try:
            return tuned_encoder(tuned).to(self.device)
        except ValueError as err:
            raise CaptionerError(f"{artifacts.checkpoint}: {err}") from err

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
            raise CaptionerError(
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

        for caption in caption_batches(decoding.decoder(self.model, self.vocab), batches(),
                                      self.vocab):
            while isinstance(read[0], ImageReadError):
                yield read.popleft()
            labels, maps = caption_steps(caption.words, caption.alphas, caption.ended)
            yield Caption(read.popleft(), caption.words, maps, labels)
        yield from read  # unreadable images after the last readable one
