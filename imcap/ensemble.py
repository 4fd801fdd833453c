"""`imcap ensemble A B C`: the test split of this repository's DVC outputs captioned by an
ensemble of trained models (imcap.model.ensemble: the mean of their log-probabilities at every
step) and scored as the `evaluate` stage scores one model (imcap.evaluation.scoring), with the
decoding `params.yaml`'s `eval` section asks for. Each member is named as `imcap compare` names
a run: a git revision or DVC experiment (its `data/model/decoder.pt` and vocabulary through
DVC), `workspace` (the DVC outputs as they are), an MLflow train or evaluate run id or a
registered version `models:/imcap/N` (as `imcap caption --run-id` reads them). Writes
`eval.json` (the same metrics as `metrics/eval.json`, and the members) and `captions.csv` (the
per-image table `imcap compare` reads) into the output folder."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

import yaml

from imcap.atomic import atomic_path, write_json
from imcap.data.karpathy import load_dataset
from imcap.data.vocab import EncodedCaptions, Vocabulary
from imcap.devices import pick_device
from imcap.evaluation.bleu import best_constant_caption
from imcap.evaluation.coco_metrics import CocoScorer
from imcap.evaluation.compare_sides import MLFLOW_RUN, WORKSPACE, open_at_revision
from imcap.evaluation.params import EvalStageParams
from imcap.evaluation.per_image import write_table
from imcap.evaluation.scoring import caption_test, eval_metrics, score_captions, score_lines
from imcap.features.splits import load_split
from imcap.features.store import FeatureStore
from imcap.model.checkpoint import checkpoint_encoder, load_checkpoint
from imcap.model.ensemble import Ensemble
from imcap.model.params import reads_regions
from imcap.model_lookup import MODEL_URI, dvc_artifacts, mlflow_artifacts
from imcap.params_base import PARAMS_FILE, load_stage_params
from imcap.paths import CAPTION_FILE, CAPTIONS_FILE, CHECKPOINT_FILE, FEATURES_FILE, VOCAB_FILE

METRICS_NAME, CAPTIONS_NAME = "eval.json", "captions.csv"


class EnsembleError(Exception):
    """Members that cannot caption together: `imcap ensemble` prints it as one line."""


@dataclass(frozen=True)
class Member:
    name: str  # as the command line named it
    checkpoint: Path
    vocab: Vocabulary
    encoder: tuple[str, str] | None  # the encoder and weights of its features, where known


def fetch_member(source: str, root: Path, dest: Path) -> Member:
    """The decoder and vocabulary `source` names (see the module doc), downloaded or copied
    out of DVC into the new folder `dest` where they are not files already."""
    if source == WORKSPACE:
        artifacts = dvc_artifacts(root)
    elif MLFLOW_RUN.fullmatch(source) or MODEL_URI.fullmatch(source):
        run = MLFLOW_RUN.fullmatch(source)
        artifacts = mlflow_artifacts(run.group(1) if run else source, dest, root)
    else:
        dest.mkdir(parents=True)
        for path in (CHECKPOINT_FILE, VOCAB_FILE, Path(PARAMS_FILE)):
            with open_at_revision(path, source, root, "trained", mode="rb") as stream:
                (dest / path.name).write_bytes(stream.read())
        params = yaml.safe_load((dest / Path(PARAMS_FILE).name).read_text()) or {}
        weights = (params.get("features") or {}).get("weights")
        return Member(source, dest / CHECKPOINT_FILE.name,
                      Vocabulary.load(dest / VOCAB_FILE.name),
                      (params["encoder"], weights) if "encoder" in params and weights else None)
    return Member(source, artifacts.checkpoint, Vocabulary.load(artifacts.vocab),
                  (artifacts.encoder, artifacts.weights))


def check_vocabularies(members: Sequence[Member]) -> None:
    """Refuse, naming the first two that differ, members whose vocabularies are not the same
    words in the same order."""
    first = members[0]
    for member in members[1:]:
        if member.vocab.words != first.vocab.words:
            raise EnsembleError(f"{first.name} and {member.name} have different vocabularies "
                                f"({_difference(first.vocab, member.vocab)}); an ensemble's "
                                "models must share one (same dataset and vocab params)")


def _difference(a: Vocabulary, b: Vocabulary) -> str:
    if len(a) != len(b):
        return f"{len(a)} and {len(b)} words"
    i = next(i for i, (x, y) in enumerate(zip(a.words, b.words, strict=True)) if x != y)
    return f"word {i} is {a.words[i]!r} and {b.words[i]!r}"


def run_ensemble(sources: Sequence[str], root: Path, out: Path, device_name: str | None
                 ) -> list[str]:
    """Caption and score the test split of `root` with the ensemble of `sources` on
    `device_name` (None: `train.device`); write `out`/eval.json and `out`/captions.csv, both
    renamed into place last. Returns the lines to print."""
    if out.exists() and not out.is_dir():
        raise EnsembleError(f"--out {out}: is not a directory")
    params = load_stage_params(EvalStageParams, root / PARAMS_FILE)
    settings = params.eval
    device = pick_device(device_name or params.train.device,
                         "--device" if device_name else "train.device")
    test_split = Member(f"this repository's test split ({root / VOCAB_FILE})", root / VOCAB_FILE,
                        Vocabulary.load(root / VOCAB_FILE), None)
    with TemporaryDirectory(prefix="imcap-ensemble-") as tmp:
        members = [fetch_member(source, root, Path(tmp) / f"member{i}")
                   for i, source in enumerate(sources)]
        check_vocabularies([*members, test_split])
        for member in members:
            if checkpoint_encoder(member.checkpoint) is not None:
                raise EnsembleError(f"{member.name}: its encoder was fine-tuned "
                                    "(train.finetune_encoder), so the stored features are not "
                                    "what it reads; an ensemble's models must be trained on the "
                                    "stored features (train.finetune_encoder: 0)")
        models = [load_checkpoint(member.checkpoint, device) for member in members]
    store = FeatureStore(root / FEATURES_FILE)
    encoder = (str(store.attrs["encoder"]), str(store.attrs["weights"]))
    for member, model in zip(members, models, strict=True):
        if member.encoder not in (None, encoder):
            raise EnsembleError(f"{member.name}: trained on the features of encoder "
                                f"{member.encoder[0]} (weights {member.encoder[1]}), but "
                                f"{store.path} holds {encoder[0]}'s (weights {encoder[1]}); an "
                                "ensemble's models must be trained on this encoder's features")
        if model.config.encoder_channels != store.feature_dim:
            raise EnsembleError(f"{member.name}: its decoder reads {model.config.encoder_channels}"
                                f" feature channels, {store.path} holds {store.feature_dim}; "
                                "an ensemble's models must be trained on this encoder's features")
    ensemble = Ensemble(models)
    dataset = load_dataset(root / CAPTION_FILE)
    encoded = EncodedCaptions.load(root / CAPTIONS_FILE)
    regions = any(reads_regions(m.config.decoder, m.config.attention) for m in models)
    test = load_split("test", encoded, store, dataset,
                      int(params.train.features_in_memory_gb * 2**30), regions=regions)
    files = encoded.filenames[encoded.images_in("test")].tolist()
    with CocoScorer(meteor=settings.meteor) as coco:
        decoded = caption_test(ensemble, test, test_split.vocab, device, settings)
        scores, per_image = score_captions(coco, files, test.references, decoded.captions)
    train_captions = [c for image in dataset.split("train") for c in image.captions]
    _, constant_bleu4 = best_constant_caption(test.references, train_captions)
    metrics = (eval_metrics(scores, decoded.loss, constant_bleu4, len(files), coco.skipped)
               | {"members": list(sources)})
    out.mkdir(parents=True, exist_ok=True)
    with ExitStack() as outputs:
        write_json(outputs.enter_context(atomic_path(out / METRICS_NAME)), metrics)
        write_table(outputs.enter_context(atomic_path(out / CAPTIONS_NAME)), per_image)
    return [f"ensemble of {len(members)}: {', '.join(sources)}; {len(files)} test images",
            *score_lines(scores, coco.skipped),
            f"wrote {out / METRICS_NAME} and {out / CAPTIONS_NAME}"]

