"""DVC stage `evaluate`: greedy captions for the test split, BLEU-1..4, sample captions."""

import pandas as pd

from imcap.atomic import atomic_path, write_json
from imcap.bleu import best_constant_caption
from imcap.data import load_split
from imcap.devices import pick_device
from imcap.features import FeatureStore
from imcap.karpathy import load_dataset
from imcap.params import load_params
from imcap.paths import (
    CAPTION_FILE,
    CAPTIONS_FILE,
    CHECKPOINT_FILE,
    EVAL_METRICS,
    EVAL_SAMPLES,
    FEATURES_FILE,
    MLFLOW_RUN_FILE,
    VOCAB_FILE,
)
from imcap.tracking import mlflow_run
from imcap.training import evaluate_split, load_checkpoint
from imcap.vocab import EncodedCaptions, Vocabulary


def main() -> None:
    params = load_params()
    dataset = load_dataset(CAPTION_FILE)
    vocab = Vocabulary.load(VOCAB_FILE)
    encoded = EncodedCaptions.load(CAPTIONS_FILE)
    test = load_split("test", encoded, FeatureStore(FEATURES_FILE), dataset)
    device = pick_device(params.train.device)
    model = load_checkpoint(CHECKPOINT_FILE, device)
    loss, greedy, captions = evaluate_split(model, test, vocab, device, params.eval.max_length,
                                            params.eval.batch_size)
    train_captions = [c for image in dataset.split("train") for c in image.captions]
    constant, constant_bleu4 = best_constant_caption(test.references, train_captions)
    metrics = {
        "greedy": {key: round(value, 4) for key, value in greedy.items()},
        "test_loss": round(loss, 4),
        "constant_caption_bleu4": round(constant_bleu4, 4),
        "test_images": len(test.references),
    }
    print(f"test BLEU-4 {greedy['bleu4']:.2f} (greedy) vs {constant_bleu4:.2f} for the best "
          f"constant caption {' '.join(constant)!r}")
    test_files = encoded.filenames[encoded.images_in("test")]
    samples = pd.DataFrame({
        "image": test_files,
        "caption": [" ".join(c) for c in captions],
        "references": [" | ".join(" ".join(r) for r in refs) for refs in test.references],
    }).head(params.eval.num_samples)
    with atomic_path(EVAL_SAMPLES) as tmp:
        samples.to_csv(tmp, index=False)
    write_json(EVAL_METRICS, metrics)

    run_id = MLFLOW_RUN_FILE.read_text().strip() or None
    with mlflow_run(params.mlflow.enabled, params.mlflow.experiment, "evaluate",
                    resume_run_id=run_id) as tracker:
        tracker.log_metrics({f"test_greedy_{k}": v for k, v in greedy.items()}
                            | {"test_constant_caption_bleu4": constant_bleu4})
        tracker.log_artifact(EVAL_SAMPLES)
        tracker.log_artifact(EVAL_METRICS)


if __name__ == "__main__":
    main()
