"""DVC stage `train`: train the caption decoder on the selected encoder's features; with
`train.finetune_encoder`, the encoder's last stages with it, on the images
(`imcap.training.finetuning`).

Checkpoints go to a staging folder outside DVC's outputs (`.imcap/train/`); the best one is
published as data/model/decoder.pt only when training ends, so a killed train never leaves a
half-trained model where `evaluate` and `imcap caption` would use it. The same folder holds the
resume state, written after every epoch: a killed train rerun with the same train params
(speed-only ones aside), inputs, code (the files below `imcap/` and `stages/` it runs,
`imcap.stage_code`), library versions and number of processes continues from its last complete
epoch, saying so; anything else starts over, saying why (`imcap.training.resume`). To start
over by hand, delete `.imcap/train/`.

`train.processes` > 1 reruns this stage under torchrun, one process per GPU; started by torchrun
directly it trains on every rank it is given (`imcap.training.device` for several machines).
Only rank 0 logs to MLflow and writes files."""

import shutil
import time
from pathlib import Path

import pandas as pd
import torch

from imcap.atomic import atomic_path, prepare_outputs, write_json
from imcap.data.karpathy import image_root, load_dataset
from imcap.data.vocab import EncodedCaptions, Vocabulary, load_embedding_matrix
from imcap.devices import pick_device
from imcap.distributed import Shard, launch
from imcap.features.splits import load_split
from imcap.features.store import FeatureStore
from imcap.loading import read_json
from imcap.model.decoder import DecoderConfig
from imcap.params_base import flatten, load_stage_params, read_params_file
from imcap.paths import (
    CAPTION_FILE,
    CAPTIONS_FILE,
    CHECKPOINT_FILE,
    EMBEDDINGS_FILE,
    FEATURES_FILE,
    STAGED_CHECKPOINT,
    TRAIN_LOG,
    TRAIN_METRICS,
    TRAIN_STAGING_DIR,
    VOCAB_FILE,
    VOCAB_METRICS,
)
from imcap.processes import lock_folder
from imcap.stage_code import source_digests
from imcap.tracking import PUBLISHED_TAG, mlflow_run
from imcap.training.device import training_device
from imcap.training.finetuning import finetuning_splits
from imcap.training.loop import train_decoder
from imcap.training.params import TrainStageParams
from imcap.training.resume import EpochLog, claim_state_dir, fingerprint


def publish_model(staged: Path) -> None:
    """A copy of the staged checkpoint becomes CHECKPOINT_FILE in one rename (the staged one
    stays until the run is over: a rerun after a kill here publishes it again)."""
    with atomic_path(CHECKPOINT_FILE) as tmp:
        shutil.copy2(staged, tmp)


def main() -> None:
    params = load_stage_params(TrainStageParams)
    pick_device(params.train.device, "train.device")  # refused before any MLflow run is opened
    prepare_outputs(CHECKPOINT_FILE, TRAIN_LOG, TRAIN_METRICS, TRAIN_STAGING_DIR, STAGED_CHECKPOINT)
    shard = Shard.from_env()
    if shard.rank == 0:  # one training per state folder (its torchrun workers share it)
        lock_folder(TRAIN_STAGING_DIR, "training")
    if params.train.processes > 1 and shard.world_size == 1:
        launch(params.train.processes, "stages.train")
        return
    dataset = load_dataset(CAPTION_FILE)
    vocab = Vocabulary.load(VOCAB_FILE)
    encoded = EncodedCaptions.load(CAPTIONS_FILE)
    embeddings = torch.from_numpy(load_embedding_matrix(EMBEDDINGS_FILE))
    vocab_metrics = read_json(VOCAB_METRICS, stage="vocab")  # size, embedding coverage
    store = FeatureStore(FEATURES_FILE)
    in_memory = int(params.train.features_in_memory_gb * 2**30)  # larger splits: read lazily
    regions = params.reads_regions and not params.train.finetune_encoder  # tuned: not stored
    train_data = load_split("train", encoded, store, dataset, in_memory, regions)
    val_data = load_split("val", encoded, store, dataset, in_memory, regions)
    finetuning = None
    if params.train.finetune_encoder:  # the frozen trunk's outputs stand in for the features
        finetuning, splits = finetuning_splits(
            params.train, store, encoded, {"train": train_data, "val": val_data},
            image_root(CAPTION_FILE), training_device(params.train.device, shard))
        train_data, val_data = splits["train"], splits["val"]
    config = DecoderConfig.from_params(params.attention, params.model, decoder=params.decoder,
                                       vocab_size=len(vocab),
                                       embed_dim=embeddings.shape[1],
                                       encoder_channels=store.feature_dim)
    if shard.rank != 0:
        train_decoder(config, params.train, embeddings, train_data, val_data, vocab,
                      STAGED_CHECKPOINT, seed=params.train.seed, state_dir=TRAIN_STAGING_DIR,
                      finetuning=finetuning)
        return
    inputs = [CAPTION_FILE, VOCAB_FILE, CAPTIONS_FILE, EMBEDDINGS_FILE, FEATURES_FILE]
    key = fingerprint(params.trained_params(), inputs, source_digests("stages.train"),
                      shard.world_size)
    if why := claim_state_dir(TRAIN_STAGING_DIR, key):
        print(why, flush=True)
    history: list[EpochLog] = []
    with mlflow_run(params, "train", dataset=CAPTION_FILE) as tracker:
        tracker.log_params({**flatten(read_params_file()), "vocab_size": len(vocab),
                            "regions": store.grid_shape[0]})
        # Vocabulary size and embedding coverage, as the vocab stage measured them.
        tracker.log_metrics({f"vocab.{k}": v
                             for k, v in vocab_metrics.items()})

        def on_epoch(log: EpochLog) -> None:
            history.append(log)
            row = log.row()  # a self-critical epoch: its rewards instead of a train loss
            tracker.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=log.epoch)
            with atomic_path(TRAIN_LOG) as tmp:
                pd.DataFrame([h.row() for h in history]).to_csv(tmp, index=False,
                                                                float_format="%.5f")

        start = time.perf_counter()
        result = train_decoder(config, params.train, embeddings, train_data, val_data, vocab,
                               STAGED_CHECKPOINT, seed=params.train.seed, on_epoch=on_epoch,
                               state_dir=TRAIN_STAGING_DIR, finetuning=finetuning)
        publish_model(STAGED_CHECKPOINT)
        summary = {"best_epoch": result.best_epoch, "best_val_bleu4": result.best_val_bleu4,
                   "epochs_run": result.epochs_run, "stopped_early": result.stopped_early,
                   "published": result.published, "averaged_epochs": result.averaged_epochs,
                   "model_val_bleu4": result.model_val_bleu4,
                   "train_seconds": round(time.perf_counter() - start, 1)}
        if result.average_val_bleu4 is not None:  # the mean up to the best epoch, validated
            summary["average_val_bleu4"] = result.average_val_bleu4
        if params.train.scst_epochs:
            summary |= {"scst_epochs_run": result.scst_epochs_run,
                        "scst_reward": result.scst_reward}
        tracker.log_metrics({"best_val_bleu4": result.best_val_bleu4,
                             "best_epoch": result.best_epoch,
                             "averaged_epochs": result.averaged_epochs,
                             "model_val_bleu4": result.model_val_bleu4}
                            | ({"average_val_bleu4": result.average_val_bleu4}
                               if result.average_val_bleu4 is not None else {}))
        tracker.set_tags({PUBLISHED_TAG: result.published})
        tracker.log_model(CHECKPOINT_FILE)
        tracker.log_artifact(VOCAB_FILE)
        write_json(TRAIN_METRICS, summary)
    shutil.rmtree(TRAIN_STAGING_DIR)  # finished: nothing left to resume


if __name__ == "__main__":
    from imcap.stage import run_stage

    run_stage("train", main, batch_size="train.batch_size (train.scst_batch_size in the "
                                          "self-critical epochs)")
