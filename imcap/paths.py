"""Where each stage reads and writes, relative to the repository root (mirrors dvc.yaml)."""

from pathlib import Path

# Written by the `check` stage once params.yaml is valid; always the same bytes, so the stages that
# depend on it (for order: nothing runs before the whole file is valid) never rerun because of it.
PARAMS_CHECKED = Path("data/params.checked")
DATASET_DIR = Path("data/dataset")
CAPTION_FILE = DATASET_DIR / "dataset.json"  # Karpathy format, whatever the source
IMAGES_DIR = DATASET_DIR / "images"  # shapes only: real datasets stay outside data/
SKIPPED_FILE = DATASET_DIR / "skipped.json"  # images left out by download.on_bad_image=skip
VOCAB_DIR = Path("data/vocab")
VOCAB_FILE = VOCAB_DIR / "vocab.json"
CAPTIONS_FILE = VOCAB_DIR / "captions.npz"
EMBEDDINGS_FILE = VOCAB_DIR / "embeddings.npy"
FEATURES_FILE = Path("data/features/features.h5")
MODEL_DIR = Path("data/model")
CHECKPOINT_FILE = MODEL_DIR / "decoder.pt"
METRICS_DIR = Path("metrics")
VOCAB_METRICS = METRICS_DIR / "vocab.json"  # vocabulary size, embedding coverage
TRAIN_METRICS = METRICS_DIR / "train.json"
TRAIN_LOG = METRICS_DIR / "train_log.csv"
EVAL_METRICS = METRICS_DIR / "eval.json"
EVAL_SAMPLES = METRICS_DIR / "samples.csv"
# every test image's caption in every decoding mode with its per-image BLEU n-gram statistics and
# CIDEr-D (imcap/evaluation/per_image.py): what `imcap compare` reads
EVAL_CAPTIONS = METRICS_DIR / "captions.csv"
BEAM_SWEEP = METRICS_DIR / "beam_sweep.csv"  # beam, bleu4, cider: drawn by dvc.yaml `plots`
ATTENTION_DIR = METRICS_DIR / "attention"  # one PNG per test image: an image plot
# Work in progress, outside DVC's outputs (gitignored): train publishes to MODEL_DIR when done.
TRAIN_STAGING_DIR = Path(".imcap/train")
STAGED_CHECKPOINT = TRAIN_STAGING_DIR / "decoder.pt"
