"""The trained captioner as an MLflow pyfunc model: `mlflow models serve -m models:/imcap/<v>`
answers a JSON request carrying base64 images with their captions (and, when asked, the
per-word attention maps).

The model holds the decoder checkpoint and the vocabulary as artifacts, the encoder as its name,
weights and image size and the decoding defaults (`eval`'s, `DecodingDefaults`) as its
`model_config`, and this package as code (`code/imcap`), so a served model runs the code that
made it. One registered version per served model: a version is found by everything that defines
what it answers (`served_identity`: the checkpoint, the vocabulary, the `model_config` with its
decoding defaults, the code it runs and the pinned requirements; tag `imcap.model_key`), so an
evaluate run that serves exactly what a version holds registers none and is tagged with that
version, and one that changes any of it (`-S eval.length_penalty=0`: the checkpoint is the same)
registers a new version. The checkpoint's md5 (DVC's) is tagged too (`imcap.model_md5`).

The encoder is rebuilt when the model loads: `weights: none` is seeded and rebuilds anywhere;
pretrained weights are torchvision's public files, fetched into the torch cache (or pre-seeded
there) and checked against their hash, rather than copied into every evaluate run (100+ MB
each, and seconds of the stage's time).

Request (`POST /invocations`):
`{"dataframe_records": [{"image": "<base64>"}], "params": {"beam": 2, "attention": true}}`;
a param left out takes the model's default.
Answer: `{"predictions": [{"caption": "a red circle ...", "words": [...], "attention": [[...]],
"grid": [h, w]}]}` — `words` (the caption's words, then `<end>` if it ended) and `attention`
(one row of region weights per word, `grid` = its h × w) only with `attention: true`; an image
that cannot be read gets `{"caption": null, "error": "row 0: cannot read image (...)"}`.

Params are bounded (`PARAM_RANGES`), as the demo bounds uploads: decoding time and memory grow
with `beam` × `max_length` for every image of a request, so a request beyond a bound (or a
`length_penalty` below 0) is answered HTTP 400 naming the param and its valid range.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import tempfile
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

import imcap
from imcap.captioner import Artifacts, Caption, Captioner, Decoding
from imcap.devices import pick_device
from imcap.evaluation.params import DecodingDefaults
from imcap.features.image_files import ImageReadError
from imcap.stage_code import source_digests
from imcap.tracking import (
    MODEL_KEY_TAG,
    MODEL_MD5_TAG,
    MODEL_VERSION_TAG,
    REGISTERED_MODEL,
    file_md5,
)

# What the served model imports (imcap.captioner's imports), pinned to the versions that logged it:
# listed, because MLflow's inference of them would load the model in a subprocess (seconds).
REQUIREMENTS = ("torch", "torchvision", "numpy", "pillow", "pandas", "h5py", "matplotlib",
                "pydantic", "tqdm", "mlflow")
PARAM_TYPES = {"beam": "long", "length_penalty": "double", "max_length": "long",
               "block_trigrams": "boolean", "remove_bad_endings": "boolean",
               "beam_groups": "long", "diversity_lambda": "double"}
# The valid range of each numeric param, ends included.
PARAM_RANGES: dict[str, tuple[float, float]] = {"beam": (1, 10), "max_length": (1, 100),
                                                "length_penalty": (0.0, 10.0),
                                                "beam_groups": (1, 10),
                                                "diversity_lambda": (0.0, 10.0)}


class RequestParamError(MlflowException):
    """A request param out of its range: `mlflow models serve` answers HTTP 400 with this
    message (an MlflowException carries no stack trace into the reply; any other error
    would)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


def signature(defaults: DecodingDefaults) -> ModelSignature:
    """Base64 images in, captions out; the decoding params default to `defaults`."""
    return ModelSignature(
        inputs=Schema([ColSpec("string", "image")]),  # base64 of the image file's bytes
        outputs=Schema([ColSpec("string", "caption")]),
        params=ParamSchema([ParamSpec(name, kind, getattr(defaults, name))
                            for name, kind in PARAM_TYPES.items()]
                           + [ParamSpec("attention", "boolean", False)]))


def request_decoding(params: dict[str, Any] | None, defaults: DecodingDefaults
                     ) -> tuple[Decoding, bool]:
    """The decoding a request's `params` ask for (`defaults` for those it leaves out), and
    whether it wants attention maps; every param out of `PARAM_RANGES` named at once
    (`RequestParamError`)."""
    params = asdict(defaults) | {"attention": False} | (params or {})
    problems = [f"{name} must be between {low:g} and {high:g}, got {params[name]!r}"
                for name, (low, high) in PARAM_RANGES.items()
                if not (isinstance(params[name], int | float) and low <= params[name] <= high)]
    if not problems and params["beam"] % params["beam_groups"]:
        problems.append(f"beam_groups must divide beam ({params['beam']}), got "
                        f"{params['beam_groups']}")
    if problems:
        raise RequestParamError("invalid params: " + "; ".join(problems))
    decoding = Decoding(beam=int(params["beam"]), length_penalty=float(params["length_penalty"]),
                        sample=False, temperature=1.0, top_k=0,
                        max_length=int(params["max_length"]), min_length=0,
                        block_trigrams=bool(params["block_trigrams"]),
                        remove_bad_endings=bool(params["remove_bad_endings"]),
                        beam_groups=int(params["beam_groups"]),
                        diversity_lambda=float(params["diversity_lambda"]))
    return decoding, bool(params["attention"])


class CaptionModel(mlflow.pyfunc.PythonModel):
    """imcap.captioner's Captioner behind MLflow's pyfunc interface."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        config = context.model_config
        self.defaults = DecodingDefaults.from_config(config)
        artifacts = Artifacts(Path(context.artifacts["decoder"]),
                              Path(context.artifacts["vocab"]), config["encoder"],
                              config["weights"], int(config["image_size"]), self.defaults)
        self.captioner = Captioner(artifacts, pick_device("auto"))

    def predict(self, context: mlflow.pyfunc.PythonModelContext, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        decoding, attention = request_decoding(params, self.defaults)
        with tempfile.TemporaryDirectory(prefix="imcap-serve-") as tmp:
            paths = [Path(tmp) / f"row {i}" for i in range(len(model_input))]
            errors = {path: _write_image(path, text)
                      for path, text in zip(paths, model_input["image"], strict=True)}
            readable = [path for path in paths if errors[path] is None]
            results = {path: _answer(caption, attention, tmp)
                       for path, caption in zip(readable, self.captioner.caption(
                           readable, decoding, batch_size=16), strict=True)}
        return [results.get(path) or {"caption": None, "error": errors[path]} for path in paths]


def _write_image(path: Path, text: object) -> str | None:
    """The decoded bytes of base64 `text` written to `path`; else why not."""
    try:
        path.write_bytes(base64.b64decode(str(text), validate=True))
    except (binascii.Error, ValueError) as err:
        return f"{path.name}: not base64 ({err})"
    return None


def _answer(caption: Caption | ImageReadError, attention: bool, folder: str) -> dict[str, Any]:
    if isinstance(caption, ImageReadError):
        return {"caption": None, "error": str(caption).replace(folder + "/", "")}
    answer: dict[str, Any] = {"caption": " ".join(caption.words)}
    if attention and caption.maps is not None:
        side = math.isqrt(caption.maps.shape[1])
        answer |= {"words": caption.labels, "attention": caption.maps.round(5).tolist(),
                   "grid": [side, caption.maps.shape[1] // side]}
    return answer


def encode_image(path: Path) -> str:
    """The base64 text a request carries for the image file at `path`."""
    return base64.b64encode(path.read_bytes()).decode("ascii")


def model_config(encoder: str, weights: str, image_size: int,
                 defaults: DecodingDefaults) -> dict[str, Any]:
    """The served model's `model_config`: its encoder and its decoding defaults."""
    return {"encoder": encoder, "weights": weights, "image_size": image_size} | asdict(defaults)


def requirements() -> list[str]:
    return [f"{name}=={version(name)}" for name in REQUIREMENTS]


def served_identity(checkpoint: Path, vocab: Path, config: dict[str, Any]) -> str:
    """SHA-256 of everything that defines what a served model answers: the checkpoint's and the
    vocabulary's md5, `config` (encoder, decoding defaults), the digests of the repository code
    the served model runs (`imcap.serving`'s imports) and its pinned requirements."""
    identity = {"checkpoint": file_md5(checkpoint), "vocab": file_md5(vocab), "config": config,
                "code": source_digests("imcap.serving"), "requirements": requirements()}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def log_captioner(checkpoint: Path, vocab: Path, config: dict[str, Any], example: Path
                  ) -> ModelInfo:
    """Log the captioner to the active run as the pyfunc model `captioner` with `config`
    (`model_config`), with `example` (an image file) as input example, and register it as a
    new version of `imcap`."""
    defaults = DecodingDefaults.from_config(config)
    return mlflow.pyfunc.log_model(
        name="captioner", python_model=CaptionModel(),
        artifacts={"decoder": str(checkpoint), "vocab": str(vocab)},
        model_config=config,
        code_paths=[str(Path(imcap.__file__).parent)],
        signature=signature(defaults),
        input_example=pd.DataFrame({"image": [encode_image(example)]}),
        pip_requirements=requirements(),
        registered_model_name=REGISTERED_MODEL)


def register_captioner(checkpoint: Path, vocab: Path, encoder: str, weights: str,
                       image_size: int, defaults: DecodingDefaults, example: Path
                       ) -> tuple[str, bool]:
    """The version of `imcap` that serves `checkpoint` with this encoder and these decoding
    defaults, and whether it is new: the version registered before with the same
    `served_identity`, else the captioner logged to the active run (`log_captioner`) and
    registered now. The active run is tagged with the version."""
    client = mlflow.MlflowClient()
    config = model_config(encoder, weights, image_size, defaults)
    key = served_identity(checkpoint, vocab, config)
    found = client.search_model_versions(
        f"name = '{REGISTERED_MODEL}' and tags.`{MODEL_KEY_TAG}` = '{key}'")
    if found:
        number, new = str(min(int(v.version) for v in found)), False
    else:
        info = log_captioner(checkpoint, vocab, config, example)
        number, new = str(info.registered_model_version), True
        client.set_model_version_tag(REGISTERED_MODEL, number, MODEL_KEY_TAG, key)
        client.set_model_version_tag(REGISTERED_MODEL, number, MODEL_MD5_TAG,
                                     file_md5(checkpoint))
    mlflow.set_tag(MODEL_VERSION_TAG, number)
    return number, new
