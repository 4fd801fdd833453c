"""The captioner logged as an MLflow pyfunc model from an evaluate run, registered as `imcap`,
and served by the real `mlflow models serve` on 127.0.0.1: captions equal `imcap caption`'s."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from local_process import free_port, wait_until_up
from params_overrides import merged
from PIL import Image

from imcap import cli
from imcap.captioner import Artifacts, Captioner, Decoding
from imcap.data.vocab import SPECIALS, Vocabulary
from imcap.evaluation.params import DecodingDefaults
from imcap.model.checkpoint import save_checkpoint
from imcap.model.decoder import CaptionDecoder, DecoderConfig
from imcap.params import REPO_PARAMS, parse_params
from imcap.serving import REGISTERED_MODEL, encode_image, register_captioner
from imcap.tracking import MODEL_MD5_TAG, MODEL_VERSION_TAG, file_md5, mlflow_run, tracking_uri

WORDS = ("a", "red", "blue", "circle", "square", "left", "right", "top")
ENCODER, WEIGHTS, IMAGE_SIZE = "resnet18", "none", 32  # seeded random: rebuilt by the server
BIN = Path(sys.executable).parent
DEFAULTS = DecodingDefaults.from_params_file(REPO_PARAMS)  # what the evaluate stage records


def write_image(path: Path, seed: int) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="module")
def logged(tmp_path_factory) -> Path:
    """A repo whose store holds an evaluate run that logged the captioner (version 1)."""
    root = tmp_path_factory.mktemp("repo")
    saved = {k: os.environ.get(k) for k in ("DVC_ROOT", "MLFLOW_TRACKING_URI", "DVC_EXP_NAME")}
    os.environ["DVC_ROOT"] = str(root)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("DVC_EXP_NAME", None)
    write_outputs(root)
    try:
        with mlflow_run(PARAMS, "evaluate", dataset=root / "dataset.json") as tracker:
            start = time.perf_counter()
            tracker.in_run("logging the captioner model", lambda: register(root))
            (root / "log_seconds").write_text(str(time.perf_counter() - start))
        assert tracker.run_id is not None, "logging the model failed (see the warning)"
        (root / "run_id").write_text(tracker.run_id)
        yield root
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def write_outputs(root: Path) -> None:
    """What evaluate reads in `root`: vocabulary, checkpoint, caption file, an example image."""
    vocab = Vocabulary(SPECIALS + WORDS)
    vocab.save(root / "vocab.json")
    torch.manual_seed(1)
    config = DecoderConfig(vocab_size=len(vocab), embed_dim=8, encoder_channels=512,
                           projection_size=12, hidden_size=10, attention="I", attention_size=6,
                           dropout=0.0)
    save_checkpoint(root / "decoder.pt", CaptionDecoder(config).eval(), epoch=1, val_bleu4=0.0)
    (root / "dataset.json").write_text(json.dumps({"images": [], "image_root": "images"}))
    write_image(root / "example.png", seed=0)


PARAMS = parse_params(merged({"mlflow": {"enabled": True, "experiment": "imcap-test"}}))


def register(root: Path, defaults: DecodingDefaults = DEFAULTS) -> tuple[str, bool]:
    """What the evaluate stage does: the captioner of `root`'s checkpoint registered."""
    return register_captioner(root / "decoder.pt", root / "vocab.json", ENCODER, WEIGHTS,
                              IMAGE_SIZE, defaults, root / "example.png")


def evaluate_run(root: Path, defaults: DecodingDefaults = DEFAULTS) -> tuple[str, bool]:
    """An evaluate run of `root`'s checkpoint registering its captioner with `defaults`."""
    answers = []
    with mlflow_run(PARAMS, "evaluate", dataset=root / "dataset.json") as tracker:
        tracker.in_run("logging the captioner model",
                       lambda: answers.append(register(root, defaults)))
    return answers[0]


@pytest.fixture
def store(logged, monkeypatch) -> Path:
    monkeypatch.setenv("DVC_ROOT", str(logged))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return logged


def expected_caption(root: Path, image: Path, beam: int) -> str:
    """The caption `imcap caption` gives: the same Captioner from the files on disk."""
    captioner = Captioner(Artifacts(root / "decoder.pt", root / "vocab.json", ENCODER, WEIGHTS,
                                    IMAGE_SIZE, DEFAULTS), torch.device("cpu"))
    decoding = Decoding(beam, DEFAULTS.length_penalty, False, 1.0, 0, DEFAULTS.max_length, 0)
    (caption,) = captioner.caption([image], decoding, batch_size=1)
    return " ".join(caption.words)


def test_the_model_is_a_registered_version_of_the_evaluate_run(store):
    client = mlflow.MlflowClient(tracking_uri())
    run_id = (store / "run_id").read_text()
    (version,) = client.search_model_versions(f"name = '{REGISTERED_MODEL}'")
    assert int(version.version) == 1 and version.run_id == run_id
    model = mlflow.models.get_model_info(f"models:/{REGISTERED_MODEL}/1")
    assert model.signature.inputs.input_names() == ["image"]
    assert {p.name for p in model.signature.params.params} >= {"beam", "attention"}
    assert model.saved_input_example_info is not None
    print("log_captioner seconds:", (store / "log_seconds").read_text())
    assert float((store / "log_seconds").read_text()) < 15  # on a shared 2-core machine


def test_an_unchanged_model_registers_no_new_version(store):
    client = mlflow.MlflowClient(tracking_uri())
    with mlflow_run(PARAMS, "evaluate", dataset=store / "dataset.json") as tracker:
        answers = []
        tracker.in_run("logging the captioner model", lambda: answers.append(register(store)))
    assert answers == [("1", False)]
    (version,) = client.search_model_versions(f"name = '{REGISTERED_MODEL}'")
    assert version.tags[MODEL_MD5_TAG] == file_md5(store / "decoder.pt")
    for run_id in (tracker.run_id, (store / "run_id").read_text()):
        assert client.get_run(run_id).data.tags[MODEL_VERSION_TAG] == "1"
    config = mlflow.models.get_model_info(f"models:/{REGISTERED_MODEL}/1").flavors[
        "python_function"]["config"]
    assert {k: config[k] for k in ("beam", "length_penalty", "max_length")} == {
        "beam": DEFAULTS.beam, "length_penalty": DEFAULTS.length_penalty,
        "max_length": DEFAULTS.max_length}


def test_an_evaluate_only_change_of_the_decoding_defaults_serves_a_new_version(
        tmp_path, monkeypatch):
    """`dvc exp run -S eval.length_penalty=0` reruns evaluate on the same checkpoint: the
    version it registers decodes with 0, and the version of the old value still with that."""
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    write_outputs(tmp_path)
    no_penalty = dataclasses.replace(DEFAULTS, length_penalty=0.0)
    assert DEFAULTS.length_penalty != 0.0
    assert evaluate_run(tmp_path) == ("1", True)
    assert evaluate_run(tmp_path, no_penalty) == ("2", True)
    assert evaluate_run(tmp_path, no_penalty) == ("2", False)  # the same again: found
    assert evaluate_run(tmp_path) == ("1", False)
    image = write_image(tmp_path / "mine.png", seed=5)
    assert served_decoding("2", image) == dataclasses.replace(served_decoding("1", image),
                                                              length_penalty=0.0)
    assert served_decoding("1", image).length_penalty == DEFAULTS.length_penalty


def test_a_version_decodes_with_the_rules_and_diverse_beam_search_it_was_evaluated_with(
        tmp_path, monkeypatch):
    """`eval.block_trigrams`, `eval.remove_bad_endings`, `eval.beam_groups` and
    `eval.diversity_lambda` are recorded with the version, which decodes with them unless a
    request says otherwise."""
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    write_outputs(tmp_path)
    diverse = {"block_trigrams": True, "remove_bad_endings": True, "beam_groups": 3,
               "diversity_lambda": 0.5}
    assert DEFAULTS.beam == 3
    assert evaluate_run(tmp_path) == ("1", True)
    assert evaluate_run(tmp_path, dataclasses.replace(DEFAULTS, **diverse)) == ("2", True)
    image = write_image(tmp_path / "mine.png", seed=5)
    plain = served_decoding("1", image)
    assert (plain.block_trigrams, plain.remove_bad_endings, plain.beam_groups,
            plain.diversity_lambda) == (False, False, 1, 0.0)
    assert served_decoding("2", image) == dataclasses.replace(plain, **diverse)
    off = {"block_trigrams": False, "beam_groups": 1, "diversity_lambda": 0.0}
    assert served_decoding("2", image, off) == dataclasses.replace(plain, remove_bad_endings=True)


def served_decoding(version: str, image: Path, params: dict | None = None) -> Decoding:
    """The decoding the registered `version` captions `image` with when a request names no
    param (or `params`)."""
    served = mlflow.pyfunc.load_model(f"models:/{REGISTERED_MODEL}/{version}")
    captioner = served.unwrap_python_model().captioner
    decodings, caption = [], captioner.caption

    def recorded(images, decoding, **kwargs):
        decodings.append(decoding)
        return caption(images, decoding, **kwargs)

    captioner.caption = recorded
    served.predict(pd.DataFrame({"image": [encode_image(image)]}), params=params)
    (decoding,) = decodings
    return decoding


@pytest.mark.parametrize("source", ["models:/imcap/1", "evaluate run"])
def test_imcap_caption_reads_a_registered_version_or_an_evaluate_run(store, tmp_path, capsys,
                                                                      source):
    image = write_image(tmp_path / "mine.png", seed=4)
    run_id = (store / "run_id").read_text() if source == "evaluate run" else source
    status = cli.main(["caption", str(image), "--run-id", run_id, "--root", str(tmp_path)])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert out == f"{image}\t{expected_caption(store, image, beam=DEFAULTS.beam)}\n"


def test_a_registered_version_is_found_whatever_registry_this_process_named_before(
        store, tmp_path, capsys, monkeypatch):
    """MLflow's registry URI is process-wide (and exported to subprocesses): the lookup asks its
    own store's registry, neither misled by one another caller set nor setting one itself."""
    other = f"sqlite:///{tmp_path / 'other.db'}"
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", other)
    monkeypatch.setattr("mlflow.tracking._model_registry.utils._registry_uri", other)
    image = write_image(tmp_path / "mine.png", seed=4)
    status = cli.main(["caption", str(image), "--run-id", "models:/imcap/1", "--root",
                       str(tmp_path)])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert out == f"{image}\t{expected_caption(store, image, beam=DEFAULTS.beam)}\n"
    assert mlflow.get_registry_uri() == other and os.environ["MLFLOW_REGISTRY_URI"] == other


def test_pyfunc_captions_and_attention_maps_as_imcap_caption_does(store, tmp_path):
    image = write_image(tmp_path / "mine.png", seed=5)
    model = mlflow.pyfunc.load_model(f"models:/{REGISTERED_MODEL}/1")
    (plain,) = model.predict(pd.DataFrame({"image": [encode_image(image)]}), params={"beam": 2})
    assert plain == {"caption": expected_caption(store, image, beam=2)}
    (mapped,) = model.predict(pd.DataFrame({"image": [encode_image(image)]}),
                              params={"beam": 1, "attention": True})
    assert mapped["caption"] == expected_caption(store, image, beam=1)
    assert mapped["words"][: len(mapped["caption"].split())] == mapped["caption"].split()
    assert mapped["grid"] == [1, 1]  # resnet18 at 32 px: a 1×1 grid
    assert np.allclose(np.sum(mapped["attention"], axis=1), 1.0, atol=1e-4)


def test_unreadable_rows_get_an_error_and_the_others_their_caption(store, tmp_path):
    image = write_image(tmp_path / "mine.png", seed=5)
    model = mlflow.pyfunc.load_model(f"models:/{REGISTERED_MODEL}/1")
    text = base64.b64encode(b"not an image").decode()
    answers = model.predict(pd.DataFrame({"image": ["%%%", text, encode_image(image)]}))
    assert answers[0]["caption"] is None and "row 0: not base64" in answers[0]["error"]
    assert answers[1]["caption"] is None and "row 1: cannot read image" in answers[1]["error"]
    assert answers[2] == {"caption": expected_caption(store, image, beam=3)}


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def served(logged) -> Iterator[str]:
    """`mlflow models serve` of version 1, started once for the tests that post to it (`logged`
    points DVC_ROOT, so `tracking_uri()`, at its repo for the whole module)."""
    port = free_port()
    env = os.environ | {"MLFLOW_TRACKING_URI": tracking_uri(), "NO_PROXY": "127.0.0.1",
                        "no_proxy": "127.0.0.1", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    server = subprocess.Popen(
        [BIN / "mlflow", "models", "serve", "-m", f"models:/{REGISTERED_MODEL}/1",
         "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/ping", server)
        yield url
    finally:
        os.killpg(server.pid, 15)  # uvicorn and its worker: the group this test started
        server.wait(timeout=30)
        server.stdout.close()


def test_mlflow_models_serve_answers_a_base64_image_with_its_caption(served, store, tmp_path):
    image = write_image(tmp_path / "mine.png", seed=9)
    answer = post(f"{served}/invocations",
                  {"dataframe_records": [{"image": encode_image(image)}],
                   "params": {"beam": 2, "attention": True}})
    (prediction,) = answer["predictions"]
    assert prediction["caption"] == expected_caption(store, image, beam=2)
    assert len(prediction["attention"]) == len(prediction["words"])


# Params out of range: each refused naming the param and its valid range.
BAD_PARAMS = {"beam 0": ({"beam": 0}, "beam must be between 1 and 10, got 0"),
              "beam -3": ({"beam": -3}, "beam must be between 1 and 10, got -3"),
              "max_length 0": ({"max_length": 0}, "max_length must be between 1 and 100, got 0"),
              "max_length 3000000": ({"max_length": 3_000_000, "beam": 3},
                                     "max_length must be between 1 and 100, got 3000000"),
              "length_penalty -1": ({"length_penalty": -1.0},
                                    "length_penalty must be between 0 and 10, got -1.0"),
              "beam_groups 2 of beam 3": ({"beam": 3, "beam_groups": 2},
                                          "beam_groups must divide beam (3), got 2")}


def test_params_out_of_range_are_refused_naming_the_param_and_its_range(store, tmp_path):
    from mlflow.exceptions import MlflowException

    rows = pd.DataFrame({"image": [encode_image(write_image(tmp_path / "mine.png", seed=5))]})
    model = mlflow.pyfunc.load_model(f"models:/{REGISTERED_MODEL}/1")
    for params, message in BAD_PARAMS.values():
        with pytest.raises(MlflowException) as refused:
            model.predict(rows, params=params)
        assert message in refused.value.message
        assert refused.value.get_http_status_code() == 400
    both = {"beam": 0, "length_penalty": -1.0}
    with pytest.raises(MlflowException, match=r"beam must .*; length_penalty must"):
        model.predict(rows, params=both)


def test_mlflow_models_serve_answers_bad_params_with_400_and_no_stack_trace(served, tmp_path):
    image = encode_image(write_image(tmp_path / "mine.png", seed=9))
    for params, message in BAD_PARAMS.values():
        with pytest.raises(urllib.error.HTTPError) as refused:
            post(f"{served}/invocations", {"dataframe_records": [{"image": image}],
                                           "params": params})
        assert refused.value.code == 400
        body = refused.value.read().decode()
        assert message in json.loads(body)["message"]
        assert "stack_trace" not in body and "Traceback" not in body
    (answer,) = post(f"{served}/invocations", {"dataframe_records": [{"image": image}],
                                               "params": {"max_length": 100}})["predictions"]
    assert answer["caption"] is not None  # the largest max_length still answers
