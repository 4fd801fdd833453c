"""DVC stage `train`: train the caption decoder on the selected encoder's features."""

import json
import time

import numpy as np
import pandas as pd
import torch

from imcap.atomic import atomic_path, write_json, write_text
from imcap.data.karpathy import load_dataset
from imcap.data.vocab import EncodedCaptions, Vocabulary
from imcap.features.splits import load_split
from imcap.features.store import FeatureStore
from imcap.model.decoder import DecoderConfig
from imcap.params import load_params
from imcap.paths import (
    CAPTION_FILE,
    CAPTIONS_FILE,
    CHECKPOINT_FILE,
    EMBEDDINGS_FILE,
    FEATURES_FILE,
    MLFLOW_RUN_FILE,
    TRAIN_LOG,
    TRAIN_METRICS,
    VOCAB_FILE,
    VOCAB_METRICS,
)
from imcap.tracking import mlflow_run
from imcap.training.loop import EpochLog, train_decoder


def main() -> None:
    params = load_params()
    dataset = load_dataset(CAPTION_FILE)
    vocab = Vocabulary.load(VOCAB_FILE)
    encoded = EncodedCaptions.load(CAPTIONS_FILE)
    embeddings = torch.from_numpy(np.load(EMBEDDINGS_FILE))
    store = FeatureStore(FEATURES_FILE)
    in_memory = int(params.train.features_in_memory_gb * 2**30)  # larger splits: read lazily
    train_data = load_split("train", encoded, store, dataset, in_memory)
    val_data = load_split("val", encoded, store, dataset, in_memory)
    config = DecoderConfig(
        vocab_size=len(vocab),
        embed_dim=embeddings.shape[1],
        encoder_channels=store.feature_dim,
        projection_size=params.model.projection_size,
        hidden_size=params.model.hidden_size,
        attention=params.attention,
        attention_size=params.model.attention_size,
        dropout=params.model.dropout,
    )
    history: list[EpochLog] = []
    with mlflow_run(params.mlflow.enabled, params.mlflow.experiment, "train") as tracker:
        tracker.log_params({**params.as_flat_dict(), "vocab_size": len(vocab),
                            "regions": store.grid_shape[0]})
        # Vocabulary size and embedding coverage, as the vocab stage measured them.
        tracker.log_metrics({f"vocab.{k}": v
                             for k, v in json.loads(VOCAB_METRICS.read_text()).items()})

        def on_epoch(log: EpochLog) -> None:
            history.append(log)
            tracker.log_metrics({"train_loss": log.train_loss, "val_loss": log.val_loss,
                                 "val_bleu4": log.val_bleu4}, step=log.epoch)
            with atomic_path(TRAIN_LOG) as tmp:
                pd.DataFrame(history).to_csv(tmp, index=False, float_format="%.5f")

        start = time.perf_counter()
        result = train_decoder(config, params.train, embeddings, train_data, val_data, vocab,
                               CHECKPOINT_FILE, seed=params.seed, on_epoch=on_epoch)
        summary = {"best_epoch": result.best_epoch, "best_val_bleu4": result.best_val_bleu4,
                   "epochs_run": result.epochs_run, "stopped_early": result.stopped_early,
                   "train_seconds": round(time.perf_counter() - start, 1)}
        tracker.log_metrics({"best_val_bleu4": result.best_val_bleu4,
                             "best_epoch": result.best_epoch})
        tracker.log_artifact(CHECKPOINT_FILE)
        tracker.log_artifact(VOCAB_FILE)
        write_json(TRAIN_METRICS, summary)
        write_text(MLFLOW_RUN_FILE, (tracker.run_id or "") + "\n")


if __name__ == "__main__":
    main()
