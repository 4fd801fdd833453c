"""The `train` and `mlflow` sections of `params.yaml` (defaults there) and what the `train`
stage reads."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import Field, model_validator

from imcap.devices import DEVICES
from imcap.features.params import check_finetune_stages
from imcap.model.params import ATTENTIONS, DECODERS, ModelParams, reads_regions
from imcap.params_base import (
    SPEED_ONLY,
    BatchSize,
    Fraction,
    NonNegative,
    NonNegativeFloat,
    Positive,
    PositiveFloat,
    Processes,
    Section,
    Seed,
    Words,
    Workers,
    choice,
)
from imcap.tracking import MlflowParams

# The sections of what the train stage reads that can change what it computes (the others name
# and track its MLflow run)
TRAINED_SECTIONS = ("attention", "decoder", "seed", "model", "train")
PRECISIONS = ("auto", "float32", "bfloat16")  # auto: bfloat16 autocast on CUDA, else float32
LR_SCHEDULES = ("constant", "step", "plateau", "cosine")  # imcap.training.schedule
SCST_BASELINES = ("greedy", "mean")  # imcap.training.self_critical


LearningRate = Annotated[float, Field(gt=0, le=1)]  # Adam's: above 1 it only diverges


class TrainParams(Section):
    # the decoder's initialisation, dropout and batch order; the data (generated images, splits,
    # vectors of words without one) come from the top-level `seed`
    seed: Seed
    epochs: Positive
    batch_size: BatchSize  # captions per optimizer step (all ranks together)
    learning_rate: LearningRate
    grad_clip: PositiveFloat
    teacher_forcing: Fraction  # probability of feeding the true previous word (seed v1: 0.9)
    # scheduled sampling (imcap.training.scheduled_sampling): the probability of feeding the
    # model's own word starts at 1 - teacher_forcing and, after scheduled_sampling_start epochs,
    # grows by scheduled_sampling_increase_prob every scheduled_sampling_increase_every epochs up
    # to scheduled_sampling_max_prob; false: teacher_forcing throughout
    scheduled_sampling: bool
    scheduled_sampling_start: NonNegative
    scheduled_sampling_increase_every: Positive
    scheduled_sampling_increase_prob: Fraction
    scheduled_sampling_max_prob: Fraction
    # torch's cross_entropy(label_smoothing=...): the target puts this much of its mass evenly
    # on every word (ImageCaptioning.pytorch's option); 0 = plain cross-entropy
    label_smoothing: Annotated[float, Field(ge=0, lt=1)]
    # Show-Attend-Tell's doubly stochastic regularisation: this x sum over regions of
    # (1 - sum over a caption's steps of its attention)^2 added to each caption's loss
    attention_regularization: NonNegativeFloat
    freeze_embeddings: bool  # keep the pretrained vectors fixed (seed v1)
    patience: Positive  # stop after this many epochs without a better validation BLEU-4
    max_length: Words  # most words in a validation caption (greedy decoding)
    device: choice(DEVICES)
    # a split's features up to this size are held in RAM, larger ones read batch by batch
    features_in_memory_gb: Annotated[NonNegativeFloat, SPEED_ONLY]
    # captions: shuffled one by one, each batch reads its images; images: windows of
    # `image_window` shuffled images, each read once per epoch, their captions shuffled together
    # into batches (a store read lazily from disk). imcap.training.batches
    batching: choice(("captions", "images"))
    image_window: Positive  # images per window (batching: images), read and on the device at once
    # DataLoader processes reading feature windows; 0: the main one; auto: imcap.training.readahead
    num_workers: Annotated[Workers | Literal["auto"], SPEED_ONLY]
    processes: Processes  # > 1: DistributedDataParallel under torchrun, one process per GPU
    deterministic: bool  # deterministic algorithms (+ CUBLAS_WORKSPACE_CONFIG) while training
    # torch's CPU threads while training; 0: one per core. Training on the CPU reproduces exactly
    # only at one thread count (imcap.training.device.cpu_threads)
    cpu_threads: NonNegative
    precision: choice(PRECISIONS)
    compile: bool  # torch.compile the decoder
    # the learning rate of each epoch (imcap.training.schedule): constant | step (x lr_decay every
    # lr_decay_every epochs) | plateau (x lr_decay after lr_decay_every epochs without a better
    # validation BLEU-4) | cosine (down to 0 at `epochs`); the decay begins after lr_decay_start
    lr_schedule: choice(LR_SCHEDULES)
    lr_decay: Annotated[float, Field(gt=0, le=1)]
    lr_decay_every: Positive
    lr_decay_start: NonNegative
    # the published model: the mean of the weights at the end of the `average_last` epochs
    # ending at the best one by validation BLEU-4, or that best epoch when it validates higher
    # (imcap.training.loop.publish); 0 = the best epoch
    average_last: NonNegative
    # fine-tuning the encoder (imcap.training.finetuning): its last `finetune_encoder` stages
    # (imcap.features.params.STAGES) trained on the images with the decoder, from epoch
    # `finetune_from_epoch` on, at `encoder_learning_rate`; 0 = off (the stored features)
    finetune_encoder: NonNegative
    encoder_learning_rate: LearningRate
    finetune_from_epoch: Positive
    # self-critical training (imcap.training.self_critical): after the cross-entropy epochs and
    # from their published model, `scst_epochs` epochs of REINFORCE with reward CIDEr-D +
    # scst_bleu_weight x BLEU-4, `scst_samples` captions drawn per image, baseline the greedy
    # caption's reward or the mean of the image's other samples; fresh Adam at its own rate
    scst_epochs: NonNegative  # 0 = off
    scst_learning_rate: LearningRate
    scst_batch_size: BatchSize  # images per optimizer step (all ranks together)
    scst_samples: Annotated[int, Field(gt=0, le=100)]  # captions drawn per image (usually 5)
    scst_baseline: choice(SCST_BASELINES)
    scst_bleu_weight: NonNegativeFloat

    @model_validator(mode="after")
    def _schedule_grows(self) -> Self:
        if self.scheduled_sampling and self.scheduled_sampling_max_prob < 1 - self.teacher_forcing:
            raise ValueError(f"train.scheduled_sampling_max_prob "
                             f"({self.scheduled_sampling_max_prob:g}) is below the probability "
                             "the schedule starts from, 1 - train.teacher_forcing "
                             f"({1 - self.teacher_forcing:g}); raise it or train.teacher_forcing")
        return self

    @model_validator(mode="after")
    def _mean_baseline_needs_two_samples(self) -> Self:
        if self.scst_baseline == "mean" and self.scst_samples < 2:
            raise ValueError("train.scst_baseline mean needs train.scst_samples >= 2 (the mean "
                             "of an image's other samples)")
        return self


class TrainStageParams(Section):
    """What the `train` stage reads. `dataset` and `encoder` only name its MLflow run (`check`
    validates them against their registries)."""

    dataset: str
    encoder: str
    attention: choice(ATTENTIONS)
    decoder: choice(DECODERS)
    seed: Seed
    model: ModelParams
    train: TrainParams
    mlflow: MlflowParams

    @property
    def reads_regions(self) -> bool:
        return reads_regions(self.decoder, self.attention)

    def trained_params(self) -> dict[str, Any]:
        """What can change what training computes, flat (`{"train.epochs": 20, ...}`): the
        `TRAINED_SECTIONS` without the speed-only keys. Exactly the train stage's `dvc.yaml`
        params (tests/test_dvc_deps.py) and the params of its resume fingerprint."""
        return {key: value for key, value in self.result_params().items()
                if key.split(".")[0] in TRAINED_SECTIONS}

    @model_validator(mode="after")
    def _regularized_attention_exists(self) -> Self:
        if self.train.attention_regularization > 0 and not (
                self.decoder == "lstm" and self.attention != "none"):
            raise ValueError("train.attention_regularization needs decoder lstm with attention "
                             f"I or II (got decoder {self.decoder}, attention {self.attention}); "
                             "set it to 0")
        if self.model.attention_gate and not (self.decoder == "lstm"
                                              and self.attention != "none"):
            raise ValueError("model.attention_gate needs decoder lstm with attention I or II "
                             f"(got decoder {self.decoder}, attention {self.attention}); set it "
                             "to false")
        return self

    @model_validator(mode="after")
    def _attention_none_is_the_lstms(self) -> Self:
        if self.decoder == "updown" and self.attention == "none":
            raise ValueError("decoder updown attends over the regions: set attention to I or II "
                             "(got none)")
        if self.decoder == "transformer" and self.attention == "none":
            raise ValueError("decoder transformer attends over the regions (cross-attention) "
                             "whatever attention says: for no attention set decoder lstm")
        return self

    @model_validator(mode="after")
    def _encoder_has_the_stages_to_tune(self) -> Self:
        if self.train.finetune_encoder:
            check_finetune_stages(self.encoder, self.train.finetune_encoder)
            if self.train.finetune_from_epoch > self.train.epochs:
                raise ValueError(f"train.finetune_from_epoch {self.train.finetune_from_epoch} "
                                 f"is after the last epoch (train.epochs {self.train.epochs}): "
                                 "the encoder would never be tuned")
        return self

    @model_validator(mode="after")
    def _transformer_is_teacher_forced(self) -> Self:
        if self.decoder == "transformer" and self.train.teacher_forcing < 1:
            raise ValueError("train.teacher_forcing must be 1 with decoder transformer (it "
                             "trains in one causal pass over the true words)")
        if self.decoder == "transformer" and self.train.scheduled_sampling:
            raise ValueError("train.scheduled_sampling needs decoder lstm (the transformer "
                             "trains in one causal pass over the true words); set it to false")
        return self
