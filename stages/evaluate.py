"""DVC stage `evaluate`: test-split captions by greedy decoding and by beam search for every
size in `eval.beams`; BLEU the seed's way (nltk) and the COCO caption metrics per decoding mode,
BLEU-4 and CIDEr-D with 95 % bootstrap intervals over test images; every test caption with its
per-image statistics (for `imcap compare`); the beam sweep as a plot; per-word attention figures
of the first test images; samples. A model whose encoder training tuned
(`train.finetune_encoder`) is scored on the test features of its tuned encoder, computed here
(the feature store's are the untuned encoder's).
Logged as an MLflow run of its own, nested under the train run of the model it scores: the
headline metrics (greedy and the default beam, `run_metrics`), every score as the artifact
`scores.csv`, and the captioner as a pyfunc model, registered as a version of `imcap` unless a
version serves this checkpoint with these decoding defaults already (imcap/serving.py)."""

from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pandas as pd

from imcap.atomic import atomic_path, prepare_outputs, write_json
from imcap.data.karpathy import image_root, load_dataset
from imcap.data.vocab import EncodedCaptions, Vocabulary
from imcap.devices import pick_device
from imcap.evaluation.attention_maps import caption_steps, draw_attention, encoder_view
from imcap.evaluation.bleu import best_constant_caption
from imcap.evaluation.coco_metrics import CocoScorer
from imcap.evaluation.params import DecodingDefaults, EvalStageParams
from imcap.evaluation.per_image import write_table
from imcap.evaluation.scoring import (
    Captions,
    Scores,
    caption_test,
    eval_metrics,
    score_captions,
    score_lines,
)
from imcap.features.image_files import load_rgb
from imcap.features.preprocessing import preprocessing
from imcap.features.splits import CaptionedSplit, load_split
from imcap.features.store import FeatureStore
from imcap.model.checkpoint import checkpoint_encoder, load_checkpoint
from imcap.model.decoding_loop import DecodedCaption
from imcap.params_base import flatten, load_stage_params, read_params_file
from imcap.paths import (
    ATTENTION_DIR,
    BEAM_SWEEP,
    CAPTION_FILE,
    CAPTIONS_FILE,
    CHECKPOINT_FILE,
    EVAL_CAPTIONS,
    EVAL_METRICS,
    EVAL_SAMPLES,
    FEATURES_FILE,
    VOCAB_FILE,
)
from imcap.stage import interruption_held
from imcap.tracking import mlflow_run

HEADLINE = ("bleu4", "cider")  # with their 95 % intervals, for greedy and the default beam


def run_metrics(scores: Scores, beam: int) -> dict[str, float]:
    """What the MLflow run shows as metrics: BLEU-4 and CIDEr-D with their intervals, greedy and
    beam `beam` (`test_greedy_bleu4`, `test_beam3_cider_ci_low`, ...); the rest of `scores` is
    the `scores.csv` artifact, so that a dozen headline numbers do not drown among 70. Rounded
    as `metrics/eval.json` is."""
    return {f"test_{mode}_{name}{bound}": round(scores[mode][f"{name}{bound}"], 4)
            for mode in ("greedy", f"beam{beam}") for name in HEADLINE
            for bound in ("", "_ci_low", "_ci_high")}


def draw_figures(figures: list[DecodedCaption], images: list[Path], label: str,
                 features: FeatureStore, folder: Path) -> list[Path]:
    """The attention figures, written into the new `folder`; each image is drawn as the
    encoder of `features` saw it (its centre crop, for a pretrained one)."""
    spec = preprocessing(str(features.attrs["encoder"]), str(features.attrs["weights"]),
                         int(features.attrs["image_size"]))
    folder.mkdir()
    for caption, image in zip(figures, images, strict=False):
        labels, maps = caption_steps(caption.words, caption.alphas, caption.ended)
        draw_attention(encoder_view(load_rgb(image), spec), labels, maps,
                       folder / f"attention_{image.stem}.png", title=f"{image.name} ({label})")
    return sorted(folder.glob("*.png"))


def write_samples(path: Path, test_files: list[str], test: CaptionedSplit,
                  captions: dict[str, Captions], best: int, count: int) -> None:
    samples = pd.DataFrame({
        "image": test_files,
        "caption": [" ".join(c) for c in captions["greedy"]],
        "references": [" | ".join(" ".join(r) for r in refs) for refs in test.references],
        f"beam{best}": [" ".join(c) for c in captions[f"beam{best}"]],
    }).head(count)
    samples.to_csv(path, index=False)


def main() -> None:
    params = load_stage_params(EvalStageParams)
    prepare_outputs(EVAL_METRICS, EVAL_SAMPLES, EVAL_CAPTIONS, BEAM_SWEEP, ATTENTION_DIR)
    settings = params.eval
    dataset = load_dataset(CAPTION_FILE)
    vocab = Vocabulary.load(VOCAB_FILE)
    encoded = EncodedCaptions.load(CAPTIONS_FILE)
    store = FeatureStore(FEATURES_FILE)
    test = load_split("test", encoded, store, dataset,
                      int(params.train.features_in_memory_gb * 2**30),
                      regions=params.reads_regions)
    test_files = encoded.filenames[encoded.images_in("test")].tolist()
    device = pick_device(params.train.device, "train.device", report=True)
    model = load_checkpoint(CHECKPOINT_FILE, device)
    if (tuned := checkpoint_encoder(CHECKPOINT_FILE)) is not None:  # the store's are stale
        from imcap.features.encode import tuned_split  # torchvision, 2 s: only when tuned

        test = tuned_split(test, tuned, store, [image_root(CAPTION_FILE) / name
                                                for name in test_files],
                           device, settings.batch_size, params.reads_regions)

    # Started first: METEOR's Java process loads its tables while the captions are decoded.
    with CocoScorer(meteor=settings.meteor) as coco:
        decoded = caption_test(model, test, vocab, device, settings)
        captions, loss = decoded.captions, decoded.loss
        scores, per_image = score_captions(coco, test_files, test.references, captions)
    for line in score_lines(scores, coco.skipped):
        print(line)

    train_captions = [c for image in dataset.split("train") for c in image.captions]
    constant, constant_bleu4 = best_constant_caption(test.references, train_captions)
    print(f"best constant caption {' '.join(constant)!r}: BLEU-4 {constant_bleu4:.2f}")
    metrics = eval_metrics(scores, loss, constant_bleu4, len(test.references), coco.skipped)
    sweep = pd.DataFrame([{"beam": k, "bleu4": scores[f"beam{k}"]["bleu4"],
                           "cider": scores[f"beam{k}"]["cider"]} for k in settings.beams])
    best = max(settings.beams, key=lambda k: (scores[f"beam{k}"]["bleu4"], -k))
    root = image_root(CAPTION_FILE)

    # Every output is written under its temporary name, logged, and only then renamed into
    # place, all together: a failure or an interruption before that leaves none of them new.
    # Each is staged just before it is written: a full disk names the one being written.
    writers: dict[Path, Callable[[Path], object]] = {
        EVAL_METRICS: lambda path: write_json(path, metrics),
        EVAL_CAPTIONS: lambda path: write_table(path, per_image),
        BEAM_SWEEP: lambda path: sweep.to_csv(path, index=False, float_format="%.4f"),
        EVAL_SAMPLES: lambda path: write_samples(path, test_files, test, captions, best,
                                                 settings.num_samples)}
    with ExitStack() as outputs:
        files = []
        for target, write in writers.items():
            files.append(outputs.enter_context(atomic_path(target)))
            write(files[-1])
        files += draw_figures(decoded.figures[best], [root / name for name in test_files],
                              f"beam {best}", store,
                              outputs.enter_context(atomic_path(ATTENTION_DIR, replace_dir=True)))
        log_run(params, scores, metrics, sweep, files,
                lambda: log_model(store, root / test_files[0],
                                  DecodingDefaults.from_eval(settings)))
        with interruption_held():
            outputs.close()


def log_run(params: EvalStageParams, scores: Scores, metrics: dict, sweep: pd.DataFrame,
            files: list[Path], log_captioner: Callable[[], None]) -> None:
    """The evaluate run in MLflow: headline metrics, every score as `scores.csv`, the beam
    sweep as curves, the output `files`, and the captioner model (`log_captioner`)."""
    with mlflow_run(params, "evaluate", dataset=CAPTION_FILE,
                    evaluates=CHECKPOINT_FILE) as tracker:
        tracker.log_params(flatten(read_params_file()))  # evaluate runs compare by their own params
        tracker.log_metrics(run_metrics(scores, params.eval.default_beam)
                            | {"test_constant_caption_bleu4": metrics["constant_caption_bleu4"],
                               "test_loss": metrics["test_loss"]})
        tracker.log_text(pd.DataFrame.from_dict(scores, orient="index").rename_axis("mode")
                         .to_csv(float_format="%.4f"), "scores.csv")
        for row in sweep.itertuples():  # the sweep as curves over "step" = beam size
            tracker.log_metrics({"test_beam_bleu4": round(row.bleu4, 4),
                                 "test_beam_cider": round(row.cider, 4)}, step=int(row.beam))
        for path in files:
            tracker.log_artifact(path)
        tracker.in_run("logging the captioner model", log_captioner)


def log_model(features: FeatureStore, example: Path, defaults: DecodingDefaults) -> None:
    """The captioner's registered version: a new one unless a version serves this checkpoint
    with these defaults, encoder and code already."""
    from imcap.serving import REGISTERED_MODEL, register_captioner  # MLflow's model code: ~1.3 s

    version, new = register_captioner(
        CHECKPOINT_FILE, VOCAB_FILE, str(features.attrs["encoder"]),
        str(features.attrs["weights"]), int(features.attrs["image_size"]), defaults, example)
    print(f"MLflow: model {'new' if new else 'unchanged'}, registered as "
          f"models:/{REGISTERED_MODEL}/{version}")


if __name__ == "__main__":
    from imcap.stage import run_stage

    run_stage("evaluate", main, batch_size="eval.batch_size")
