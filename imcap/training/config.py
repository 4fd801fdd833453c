"""The `train` section of `params.yaml` (defaults there)."""

from __future__ import annotations

from imcap.config import (
    Fraction,
    NonNegative,
    NonNegativeFloat,
    Positive,
    PositiveFloat,
    Section,
    choice,
)
from imcap.features.config import DEVICES

PRECISIONS = ("auto", "float32", "bfloat16")  # auto: bfloat16 autocast on CUDA, else float32


class TrainParams(Section):
    epochs: Positive
    batch_size: Positive  # captions per optimizer step (all ranks together)
    learning_rate: PositiveFloat
    grad_clip: PositiveFloat
    teacher_forcing: Fraction  # probability of feeding the true previous word (seed v1: 0.9)
    freeze_embeddings: bool  # keep the pretrained vectors fixed (seed v1)
    patience: Positive  # stop after this many epochs without a better validation BLEU-4
    max_length: Positive  # most words in a validation caption (greedy decoding)
    device: choice(DEVICES)
    features_in_memory_gb: NonNegativeFloat  # a split's features up to this size are held in RAM
    # captions: shuffled one by one, each batch reads its images; images: windows of
    # `image_window` shuffled images, each read once per epoch, their captions shuffled together
    # into batches (a store read lazily from disk). imcap.training.batches
    batching: choice(("captions", "images"))
    image_window: Positive  # images per window (batching: images), read and on the device at once
    num_workers: NonNegative  # DataLoader processes reading feature windows; 0: the main one
    processes: Positive  # > 1: DistributedDataParallel under torchrun, one process per GPU
    deterministic: bool  # deterministic algorithms (+ CUBLAS_WORKSPACE_CONFIG) while training
    precision: choice(PRECISIONS)
    compile: bool  # torch.compile the decoder
