"""The spread of training: one row of the table trained with N training seeds on fixed data,
each model scored on the test split; mean ± std over the seeds of greedy and beam-3 BLEU-4
(nltk, the seed's way) and CIDEr-D (pycocoevalcap), with the best epoch and the epochs run.

Only the training seed varies (`train.seed`: the decoder's initialisation, dropout and batch
order). The data (the generated `shapes` images, the splits, the embedding rows of words without
a vector) come from the top-level `seed`, fixed for all runs, and are built once: the
`download`, `vocab` and `features` stages run in a work folder (`--workdir`, reused while the
params they read are the same; default a temporary folder). Training and evaluation then call
the library directly (`imcap.training.loop.train_decoder`, the evaluate stage's decoding and
metrics; no DVC, no MLflow, no METEOR), one process per seed at a time (`--jobs` for more).

With `-S train.scst_epochs=N` (N > 0) each seed is measured twice, paired: its cross-entropy
model (trained once, with a resume state), then the same run continued by N self-critical epochs
from that state, exactly as one run with N would train. The report then holds both tables and
the per-seed differences (self-critical − cross-entropy), mean ± std.

Besides the scores, each model's share of degenerate test captions (greedy and beam 3): a word
twice in a row ("a a") or a caption ending in an article, preposition or conjunction ("… with
a"), the known failure of self-critical training. And the seconds per epoch (validation
included) of each phase, and the peak memory of the process that trained it.

With `-S train.finetune_encoder=N` the train and validation splits become the frozen trunk's
outputs of the images and the test split the tuned encoder's features, as the train and
evaluate stages make them (`imcap.training.finetuning`).

`--dataset signs` is the second synthetic set (`tests/signs_dataset.py`, 1,000 images, 150 test
images; `--signs-images 600` is the size `tests/test_unseen_data.py` runs) through
`dataset: karpathy`. `-S key=value` changes a parameter as `dvc exp run -S` does
(`-S decoder=lstm -S train.epochs=10`).

    python benchmarks/seed_spread.py                          # shapes, seeds 0-4, 1 thread each
    python benchmarks/seed_spread.py --dataset signs --seeds 5 --json spread.json
    python benchmarks/seed_spread.py -S decoder=lstm --jobs 2 --workdir /tmp/spread
    python benchmarks/seed_spread.py --seeds 3 -S train.scst_epochs=5   # CE vs + SCST, paired

Imports dvc, mlflow and nltk nowhere at module level (the stages that build the data run as
subprocesses; nltk is imported when scoring).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import hashlib
import itertools
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a plain checkout

from imcap.params import REPO_PARAMS, Params, parse_params  # noqa: E402

# The params the data stages read (dvc.yaml); a work folder is reused while these are equal.
DATA_KEYS = ("dataset", "seed", "shapes", "download", "embeddings", "vocab", "word_vectors",
             "encoder", "features")
METRICS = ("greedy.bleu4", "beam3.bleu4", "greedy.cider", "beam3.cider")
SHARES = ("greedy.degenerate", "beam3.degenerate")  # % of test captions
COUNTS = ("best_epoch", "epochs_run", "averaged_epochs")
# A caption ending in one of these stops mid-phrase.
DANGLING = frozenset({"a", "an", "the", "with", "of", "on", "in", "and"})


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`["train.epochs=5", "attention=II"]` -> {"train.epochs": 5, "attention": "II"} (values
    read as YAML, as `dvc exp run -S` reads them)."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"-S expects key=value, got {item!r}")
        overrides[key] = yaml.safe_load(value)
    return overrides


def raw_params(dataset: str, overrides: dict[str, Any], source: Path | None) -> dict[str, Any]:
    """The repository's params.yaml with the dataset's and the user's changes; no MLflow, no
    METEOR (neither changes a caption)."""
    raw = yaml.safe_load(REPO_PARAMS.read_text())
    raw["mlflow"]["enabled"] = False
    raw["eval"]["meteor"] = False
    if dataset == "signs":
        assert source is not None
        raw["dataset"] = "karpathy"
        raw["download"]["karpathy"] = {"json": str(source / "signs.json"),
                                       "images": str(source / "img")}
    for key, value in overrides.items():
        *sections, name = key.split(".")
        node = raw
        for section in sections:
            node = node.setdefault(section, {})
        node[name] = value
    return raw


def build_data(workdir: Path, dataset: str, overrides: dict[str, Any],
               signs_images: int = 1000) -> Params:
    """The data stages' outputs in `workdir` (kept when they were built from the same params);
    the params, validated. `signs` has `signs_images` images."""
    workdir.mkdir(parents=True, exist_ok=True)
    source = None
    if dataset == "signs":
        source = workdir / f"signs-{signs_images}"
        if not (source / "signs.json").is_file():
            sys.path.insert(0, str(REPO / "tests"))
            from signs_dataset import write_signs

            write_signs(source, num_images=signs_images)
    raw = raw_params(dataset, overrides, source)
    params = parse_params(copy.deepcopy(raw), source="seed_spread")
    (workdir / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    key = hashlib.sha256(json.dumps({k: raw[k] for k in DATA_KEYS}, sort_keys=True,
                                    default=str).encode()).hexdigest()
    marker = workdir / "data" / "built_from.txt"
    if marker.is_file() and marker.read_text() == key:
        print(f"data: reusing {workdir / 'data'}", file=sys.stderr)
        return params
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO),
                                                                    os.environ.get("PYTHONPATH")])),
               DVC_NO_ANALYTICS="1")
    start = time.perf_counter()
    for stage in ("download", "vocab", "features"):
        subprocess.run([sys.executable, "-m", f"stages.{stage}"], cwd=workdir, env=env,
                       check=True, stdout=subprocess.DEVNULL)
    marker.write_text(key)
    print(f"data: built in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return params


@dataclass
class Inputs:
    """What training and evaluation read, loaded the way the train and evaluate stages load it."""

    params: Params
    config: Any  # DecoderConfig
    embeddings: torch.Tensor
    vocab: Any  # Vocabulary
    train: Any  # CaptionedSplit
    val: Any
    test: Any


def load_inputs(workdir: Path, params: Params) -> Inputs:
    import numpy as np

    from imcap.data.karpathy import load_dataset
    from imcap.data.vocab import EncodedCaptions, Vocabulary
    from imcap.features.splits import load_split
    from imcap.features.store import FeatureStore
    from imcap.model.decoder import DecoderConfig
    from imcap.paths import CAPTION_FILE, CAPTIONS_FILE, EMBEDDINGS_FILE, FEATURES_FILE, VOCAB_FILE

    dataset = load_dataset(workdir / CAPTION_FILE)
    vocab = Vocabulary.load(workdir / VOCAB_FILE)
    encoded = EncodedCaptions.load(workdir / CAPTIONS_FILE)
    embeddings = torch.from_numpy(np.load(workdir / EMBEDDINGS_FILE))
    store = FeatureStore(workdir / FEATURES_FILE)
    in_memory = int(params.train.features_in_memory_gb * 2**30)
    splits = {name: load_split(name, encoded, store, dataset, in_memory, params.reads_regions)
              for name in ("train", "val", "test")}
    config = DecoderConfig.from_params(params.attention, params.model, decoder=params.decoder,
                                       vocab_size=len(vocab), embed_dim=embeddings.shape[1],
                                       encoder_channels=store.feature_dim)
    return Inputs(params, config, embeddings, vocab, splits["train"], splits["val"],
                  splits["test"])


def degenerate(caption: list[str]) -> bool:
    """A word twice in a row, or the last word an article, preposition or conjunction."""
    repeated = any(a == b for a, b in itertools.pairwise(caption))
    return repeated or not caption or caption[-1] in DANGLING


def score(model: Any, inputs: Inputs, device: torch.device) -> dict[str, float]:
    """Test greedy and beam-3 BLEU-4 (nltk) and CIDEr-D, as the evaluate stage computes them,
    and the % of degenerate captions."""
    from imcap.evaluation.bleu import bleu_scores
    from imcap.evaluation.coco_metrics import CocoScorer
    from imcap.evaluation.split_evaluation import evaluate_split
    from imcap.model.decoding_loop import beam_decoder, caption_batches

    settings, test = inputs.params.eval, inputs.test
    greedy = evaluate_split(model, test, inputs.vocab, device, settings.max_length,
                            settings.batch_size).captions
    beam = beam_decoder(model, 3, settings.max_length, length_penalty=settings.length_penalty)
    beam3 = [c.words for c in caption_batches(beam, test.image_batches(settings.batch_size,
                                                                       device), inputs.vocab)]
    result = {}
    with CocoScorer(meteor=False) as coco:
        for mode, captions in (("greedy", greedy), ("beam3", beam3)):
            result[f"{mode}.bleu4"] = bleu_scores(test.references, captions)["bleu4"]
            result[f"{mode}.cider"] = coco.score(test.references, captions)["cider"]
            result[f"{mode}.degenerate"] = 100 * sum(map(degenerate, captions)) / len(captions)
    return result


def run_seed(workdir: Path, params: Params, seed: int, threads: int
             ) -> dict[str, dict[str, Any]]:
    """Train with training seed `seed` on the data in `workdir`; its test scores, under "ce"
    and, with `train.scst_epochs`, those after the self-critical epochs under "scst"."""
    torch.set_num_threads(threads)
    from imcap.devices import pick_device
    from imcap.model.checkpoint import load_checkpoint
    from imcap.training.loop import train_decoder

    inputs = load_inputs(workdir, params)
    finetuning = tuned_inputs(workdir, inputs, device := pick_device(params.train.device))
    runs = workdir / "runs"
    runs.mkdir(exist_ok=True)
    state = runs / f"seed{seed}-state"
    shutil.rmtree(state, ignore_errors=True)
    scst_epochs = params.train.scst_epochs
    phases = {"ce": params.train.model_copy(update={"scst_epochs": 0})}
    if scst_epochs:
        phases["scst"] = params.train
    out: dict[str, dict[str, Any]] = {}
    for phase, settings in phases.items():
        checkpoint = runs / f"seed{seed}-{phase}.pt"
        if phase == "scst":  # the published cross-entropy model, where SCST starts from
            shutil.copy(runs / f"seed{seed}-ce.pt", checkpoint)
        start = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # the epoch lines: stdout is the report's
            result = train_decoder(inputs.config, settings, inputs.embeddings, inputs.train,
                                   inputs.val, inputs.vocab, checkpoint, seed=seed,
                                   state_dir=state, finetuning=finetuning)
        seconds = time.perf_counter() - start
        epochs = scst_epochs if phase == "scst" else result.epochs_run
        scored = tuned_test(workdir, inputs, checkpoint, device) if finetuning else inputs
        out[phase] = {"seed": seed, **score(load_checkpoint(checkpoint, device), scored, device),
                      "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                      "averaged_epochs": result.averaged_epochs,  # 0: the best epoch
                      "train_seconds": round(seconds, 1),
                      "epoch_seconds": round(seconds / epochs, 2),
                      "peak_rss_mb": round(peak_rss_mb())}
    shutil.rmtree(state, ignore_errors=True)
    return out


def tuned_inputs(workdir: Path, inputs: Inputs, device: torch.device) -> Any:
    """With `train.finetune_encoder`: the stages to tune (a fresh copy per seed), and the
    train and validation splits turned into the frozen trunk's outputs, as the train stage
    does (`imcap.training.finetuning`); None otherwise."""
    if not inputs.params.train.finetune_encoder:
        return None
    from imcap.data.karpathy import image_root
    from imcap.data.vocab import EncodedCaptions
    from imcap.features.store import FeatureStore
    from imcap.paths import CAPTION_FILE, CAPTIONS_FILE, FEATURES_FILE
    from imcap.training.finetuning import finetuning_splits

    finetuning, splits = finetuning_splits(
        inputs.params.train, FeatureStore(workdir / FEATURES_FILE),
        EncodedCaptions.load(workdir / CAPTIONS_FILE), {"train": inputs.train, "val": inputs.val},
        image_root(workdir / CAPTION_FILE), device)
    inputs.train, inputs.val = splits["train"], splits["val"]
    return finetuning


def tuned_test(workdir: Path, inputs: Inputs, checkpoint: Path, device: torch.device
               ) -> Inputs:
    """`inputs` with the test features of the encoder `checkpoint` tuned, as evaluate does."""
    from imcap.data.karpathy import image_root
    from imcap.data.vocab import EncodedCaptions
    from imcap.features.encode import tuned_split
    from imcap.features.store import FeatureStore
    from imcap.model.checkpoint import checkpoint_encoder
    from imcap.paths import CAPTION_FILE, CAPTIONS_FILE, FEATURES_FILE

    encoded = EncodedCaptions.load(workdir / CAPTIONS_FILE)
    root = image_root(workdir / CAPTION_FILE)
    files = [root / str(name) for name in encoded.filenames[encoded.images_in("test")]]
    test = tuned_split(inputs.test, checkpoint_encoder(checkpoint),
                       FeatureStore(workdir / FEATURES_FILE), files, device,
                       inputs.params.eval.batch_size, inputs.params.reads_regions)
    return dataclasses.replace(inputs, test=test)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, float("nan")
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per metric: mean, std (n - 1), min, max over the runs."""
    summary = {}
    for key in (*METRICS, *SHARES, *COUNTS, "train_seconds", "epoch_seconds", "peak_rss_mb"):
        values = [float(run[key]) for run in runs]
        mean, std = mean_std(values)
        summary[key] = {"mean": mean, "std": std, "min": min(values), "max": max(values)}
    return summary


def paired(ce: list[dict[str, Any]], scst: list[dict[str, Any]]) -> dict[str, Any]:
    """Per metric and share: each seed's self-critical − cross-entropy difference, and their
    mean and std."""
    differences = {}
    for key in (*METRICS, *SHARES):
        values = [b[key] - a[key] for a, b in zip(ce, scst, strict=True)]
        mean, std = mean_std(values)
        differences[key] = {"per_seed": values, "mean": mean, "std": std}
    return differences


def report(runs: list[dict[str, Any]], summary: dict[str, dict[str, float]]) -> str:
    columns = ("seed", *METRICS, *SHARES, *COUNTS, "train_seconds", "epoch_seconds")
    lines = ["  ".join(f"{c:>13}" for c in columns)]
    for run in runs:
        lines.append("  ".join(f"{run[c]:>13.2f}" if isinstance(run[c], float) else
                               f"{run[c]:>13}" for c in columns))
    for stat in ("mean", "std"):
        lines.append("  ".join([f"{stat:>13}"] + [f"{summary[c][stat]:>13.2f}"
                                                  for c in columns[1:]]))
    lines.append("")
    lines += [f"{key:>17}: {s['mean']:6.2f} ± {s['std']:.2f}  (min {s['min']:.2f}, max "
              f"{s['max']:.2f})" for key, s in summary.items()
              if key in METRICS + SHARES + COUNTS + ("epoch_seconds",)]
    return "\n".join(lines)


def report_paired(differences: dict[str, Any]) -> str:
    return "\n".join(f"{key:>17}: {d['mean']:+6.2f} ± {d['std']:.2f}  (per seed "
                     + ", ".join(f"{v:+.2f}" for v in d["per_seed"]) + ")"
                     for key, d in differences.items())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=("shapes", "signs"), default="shapes")
    parser.add_argument("--signs-images", type=int, default=1000,
                        help="images of the signs set (default 1000)")
    parser.add_argument("--seeds", type=int, default=5, help="training seeds (default 5)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="the seeds are first-seed .. first-seed + seeds - 1")
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="change a parameter, as dvc exp run -S")
    parser.add_argument("--workdir", type=Path,
                        help="keeps the built data between runs (default: a temporary folder)")
    parser.add_argument("--jobs", type=int, default=1, help="seeds trained at once")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per job")
    parser.add_argument("--json", type=Path, help="write every run and the summary here")
    args = parser.parse_args(argv)
    overrides = parse_overrides(args.overrides)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    with tempfile.TemporaryDirectory(prefix="seed_spread.") as tmp:
        workdir = (args.workdir or Path(tmp)).resolve()
        params = build_data(workdir, args.dataset, overrides, args.signs_images)
        print(f"{args.dataset}, data seed {params.seed}, training seeds {seeds}, "
              f"{args.jobs} job(s) x {args.threads} thread(s)"
              + (f", {' '.join(args.overrides)}" if args.overrides else ""), file=sys.stderr)
        start = time.perf_counter()
        if args.jobs > 1:
            with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
                both = list(pool.map(run_seed, [workdir] * len(seeds), [params] * len(seeds),
                                     seeds, [args.threads] * len(seeds)))
        else:
            both = [run_seed(workdir, params, seed, args.threads) for seed in seeds]
        wall = time.perf_counter() - start
    runs = [run["ce"] for run in both]
    summary = summarise(runs)
    result = {"dataset": args.dataset, "overrides": overrides, "data_seed": params.seed,
              **({"signs_images": args.signs_images} if args.dataset == "signs" else {}),
              "params": params.as_flat_dict(), "runs": runs, "summary": summary}
    if params.train.scst_epochs:
        print("cross-entropy only:")
    print(report(runs, summary))
    if params.train.scst_epochs:
        scst_runs = [run["scst"] for run in both]
        result |= {"scst_runs": scst_runs, "scst_summary": summarise(scst_runs),
                   "paired": paired(runs, scst_runs)}
        print(f"\n+ {params.train.scst_epochs} self-critical epochs:")
        print(report(scst_runs, result["scst_summary"]))
        print("\nself-critical − cross-entropy, paired by seed:")
        print(report_paired(result["paired"]))
    print(f"{len(seeds)} seeds in {wall:.0f} s", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps({**result, "wall_seconds": round(wall, 1)}, indent=1,
                                        default=str))


if __name__ == "__main__":
    main()
