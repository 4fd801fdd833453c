"""`imcap demo` without a browser: its JSON endpoint on a real uvicorn server (127.0.0.1), the
same captions as `imcap caption`, attention maps as PNG data URLs, and every bad upload refused
with a 4xx JSON message that names the file."""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
from demo_server import demo_app, served
from PIL import Image
from test_cli import SHORT, log_model_run, make_project, run, write_images

from imcap.model.checkpoint import load_checkpoint, save_checkpoint
from imcap.paths import CHECKPOINT_FILE
from imcap.tracking import MODEL_TAG, file_sha256

UPLOAD_LIMIT_MB = 0.05  # 52 KB: the test images are ~6 KB


def post(url: str, data: bytes, name: str | None = "photo.png") -> tuple[int, dict]:
    headers = {"Content-Type": "application/octet-stream"}
    if name is not None:
        headers["X-Filename"] = urllib.parse.quote(name)
    request = urllib.request.Request(f"{url}/api/caption", data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        body = err.read().decode()
        assert "Traceback" not in body
        return err.code, json.loads(body)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return make_project(tmp_path / "repo", monkeypatch)


@pytest.fixture
def url(project: Path, monkeypatch: pytest.MonkeyPatch):
    app, _, _ = demo_app(monkeypatch, "--root", project, "--max-upload-mb", UPLOAD_LIMIT_MB)
    with served(app) as base:
        yield base


def cli_caption(capsys: pytest.CaptureFixture, project: Path, image: Path, beam: int,
                penalty: float) -> str:
    status, out, err = run(capsys, "caption", image, "--root", project, "--beam", beam,
                           "--length-penalty", penalty)
    assert status == 0, err
    return out.split("\t", 1)[1].strip()


def png_size(data_url: str) -> tuple[int, int]:
    prefix = "data:image/png;base64,"
    assert data_url.startswith(prefix)
    with Image.open(io.BytesIO(base64.b64decode(data_url.removeprefix(prefix)))) as figure:
        assert figure.format == "PNG"
        return figure.size


def test_serves_on_localhost_by_default(project, monkeypatch):
    _, host, port = demo_app(monkeypatch, "--root", project)
    assert (host, port) == ("127.0.0.1", 8000)


def test_captions_equal_imcap_caption_with_maps_and_the_model(url, project, tmp_path, capsys):
    image = write_images(tmp_path / "mine", 1, seed=5)[0]
    status, result = post(url, image.read_bytes(), "my photo.png")
    assert status == 200, result
    assert (result["image"], result["width"], result["height"]) == ("my photo.png", 48, 40)
    greedy, beam = result["captions"]
    assert greedy["decoding"] == "greedy" and beam["decoding"] == "beam 3"
    assert greedy["caption"] == cli_caption(capsys, project, image, 1, 0.0)
    assert beam["caption"] == cli_caption(capsys, project, image, 3, 0.5)
    for shown in (greedy, beam):  # one panel per word (and <end>): wider than tall
        width, height = png_size(shown["attention_map"])
        assert width > height > 0
    model = result["model"]
    assert model["source"] == f"DVC outputs in {project.resolve()}"
    assert model["attention"] == "I" and model["decoder"] == "decoder.pt"
    assert (model["run"], model["epoch"], model["validation BLEU-4"]) == ("none logged", "1",
                                                                          "0.00")
    with urllib.request.urlopen(f"{url}/api/info", timeout=10) as response:
        info = json.loads(response.read())
    assert info == {"model": model, "max_upload_bytes": round(UPLOAD_LIMIT_MB * 2**20)}


def test_the_page_is_served(url):
    with urllib.request.urlopen(f"{url}/", timeout=10) as response:
        page = response.read().decode()
    assert response.headers["content-type"].startswith("text/html")
    assert 'id="file"' in page and "/api/caption" in page


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


NOISE = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8))


@pytest.mark.parametrize(("data", "status", "message"), [
    (b"", 400, "photo.png: the file is empty"),
    (b"just some text, not pixels", 415, "photo.png: not an image"),
    (png_bytes(NOISE)[:2000], 422, "photo.png: a damaged or truncated PNG image (OSError"),
    (b"\0" * 60_000, 413, "photo.png: larger than the 0.05 MiB upload limit"),
    (png_bytes(Image.new("1", (10_000, 6_000))), 413,
     "photo.png: 10000×6000 is more than 50,000,000 pixels"),
], ids=["empty", "text", "truncated", "too-many-bytes", "too-many-pixels"])
def test_bad_uploads_get_a_4xx_json_message(url, data, status, message):
    code, result = post(url, data)
    assert code == status
    assert list(result) == ["error"] and result["error"].startswith(message)


def test_an_unnamed_upload_is_called_upload(url):
    code, result = post(url, b"text", name=None)
    assert code == 415 and result["error"].startswith("upload: not an image")


def test_a_model_without_attention_shows_no_maps(tmp_path, monkeypatch):
    project = make_project(tmp_path / "plain", monkeypatch, attention="none")
    app, _, _ = demo_app(monkeypatch, "--root", project)
    image = write_images(tmp_path / "mine", 1)[0]
    with served(app) as base:
        status, result = post(base, image.read_bytes())
    assert status == 200, result
    assert [c["attention_map"] for c in result["captions"]] == [None, None]
    assert result["model"]["attention"] == "none"


@pytest.mark.parametrize(("argv", "message"), [
    (["--root", "{tmp}/nothing"],
     "nothing/data/model/decoder.pt: not found; run `dvc repro` first, or pass --run-id"),
    (["--beam", "0", "--port", "70000"],
     "--beam must be >= 1, got 0; --port must be between 1 and 65535, got 70000"),
    (["--max-upload-mb", "0"], "--max-upload-mb must be a finite number > 0, got 0.0"),
    (["--max-upload-mb", "inf", "--length-penalty", "inf"],
     "--length-penalty must be a finite number >= 0, got inf; --max-upload-mb must be a finite "
     "number > 0, got inf"),
])
def test_what_cannot_be_served_is_one_line(tmp_path, capsys, argv, message):
    status, out, err = run(capsys, "demo", "--device", "cpu",
                           *(arg.format(tmp=tmp_path) for arg in argv))
    assert status == 1 and out == ""
    assert err.startswith("imcap demo: error: ") and err.endswith(f"{message}\n")
    assert err.count("\n") == 1


def test_a_stream_past_the_limit_is_refused_before_it_ends(url):
    """A chunked upload announces no length: it is cut off once past the limit, not read to its
    end (a client could otherwise stream gigabytes into the server's memory)."""
    host, port = urllib.parse.urlsplit(url).netloc.split(":")
    chunk = b"\0" * 60_000
    with socket.create_connection((host, int(port)), timeout=15) as sock:
        sock.sendall(b"POST /api/caption HTTP/1.1\r\nHost: demo\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n"
                     + f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")  # never the last chunk
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.status == 413
        assert json.loads(response.read()) == {
            "error": "upload: larger than the 0.05 MiB upload limit"}


def test_the_model_of_an_mlflow_run_says_so(project, tmp_path, monkeypatch, capsys):
    run_id = log_model_run(project, tmp_path, monkeypatch)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    app, _, _ = demo_app(monkeypatch, "--run-id", run_id, "--root", tmp_path / "elsewhere")
    image = write_images(tmp_path / "mine", 1, seed=6)[0]
    with served(app) as base:
        status, result = post(base, image.read_bytes())
    assert status == 200, result
    assert result["model"]["source"] == f"MLflow run {run_id} ({uri})"
    assert result["model"]["run"] == run_id and result["model"]["epoch"] == "1"
    assert result["captions"][1]["caption"] == cli_caption(capsys, project, image, 3, 0.5)


def test_the_page_names_the_run_that_trained_the_model_and_decodes_as_its_params(
        tmp_path, monkeypatch, capsys):
    project = make_project(tmp_path / "repo", monkeypatch, params=SHORT)  # default beam 2
    model = load_checkpoint(project / CHECKPOINT_FILE)
    save_checkpoint(project / CHECKPOINT_FILE, model, epoch=7, val_bleu4=12.345)
    train_run = log_model_run(project, tmp_path, monkeypatch)
    mlflow.MlflowClient(os.environ.pop("MLFLOW_TRACKING_URI")).set_tag(
        train_run, MODEL_TAG, file_sha256(project / CHECKPOINT_FILE))  # as the train stage does
    (tmp_path / "mlflow.db").rename(project / "mlflow.db")  # the store beside the DVC outputs
    app, _, _ = demo_app(monkeypatch, "--root", project)
    image = write_images(tmp_path / "mine", 1, seed=6)[0]
    with served(app) as base:
        status, result = post(base, image.read_bytes())
    assert status == 200, result
    assert {k: result["model"][k] for k in ("run", "epoch", "validation BLEU-4")} == {
        "run": train_run, "epoch": "7", "validation BLEU-4": "12.35"}
    beam = result["captions"][1]
    assert beam["decoding"] == "beam 2" and len(beam["caption"].split()) <= 2
    assert beam["caption"] == cli_caption(capsys, project, image, 2, 1.0)


# A bound on memory (large images decoded reduced, a few decodes at a time, memory
# released after each) and a port in use.
def test_a_large_image_is_decoded_reduced_and_reported_at_its_size():
    from imcap.demo.uploads import MAX_SIDE, read_upload

    for kind in ("JPEG", "PNG"):
        buffer = io.BytesIO()
        Image.new("RGB", (6000, 4000), "red").save(buffer, format=kind)
        upload = read_upload(buffer.getvalue(), f"big.{kind}", max_bytes=2**30)
        assert (upload.width, upload.height) == (6000, 4000)
        assert max(upload.image.size) <= MAX_SIDE and upload.image.mode == "RGB"
        assert upload.image.size[0] > upload.image.size[1]  # the aspect ratio kept


def test_at_most_decode_slots_uploads_are_decoded_at_once(monkeypatch):
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from imcap.demo import app as demo

    lock, busy, peak, released = threading.Lock(), [0], [0], []

    def read(*args, **kwargs):
        with lock:
            busy[0] += 1
            peak[0] = max(peak[0], busy[0])
        return upload_of(*args, **kwargs)

    def caption(captioner, image, decodings):
        time.sleep(0.3)
        with lock:
            busy[0] -= 1
        return []

    upload_of = demo.read_upload
    monkeypatch.setattr(demo, "read_upload", read)
    monkeypatch.setattr(demo, "caption_image", caption)
    monkeypatch.setattr(demo, "release_memory", lambda: released.append(True))
    app = demo.create_app(None, {}, {}, max_bytes=2**20)
    with served(app) as base, ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: post(base, png_bytes(NOISE)), range(6)))
    assert [status for status, _ in answers] == [200] * 6
    assert peak[0] <= demo.DECODE_SLOTS < 6
    assert len(released) == 6


def test_a_port_in_use_is_the_error_alone_naming_it(monkeypatch, capsys):
    from fastapi import FastAPI

    from imcap import cli
    from imcap.demo import command

    monkeypatch.setattr(command, "demo_app", lambda args: FastAPI())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status = cli.main(["demo", "--port", str(port)])
    out, err = capsys.readouterr()
    assert (status, out) == (1, "")
    assert err == (f"imcap demo: error: port {port} on 127.0.0.1 is in use; stop what uses it "
                   "or choose another --port\n")


def test_the_page_decodes_with_the_models_rules_and_diverse_beam_search():
    """Greedy with the model's decoding rules (one group: exactly greedy decoding), the beam
    with its rules and diverse beam search."""
    from imcap import cli
    from imcap.captioner import Decoding
    from imcap.demo.command import decodings
    from imcap.evaluation.params import DecodingDefaults

    args = cli.build_parser().parse_args(["demo"])
    shown = decodings(cli.with_defaults(args, DecodingDefaults(4, 0.5, 20, True, True, 2, 1.0)))
    assert shown == {"greedy": Decoding(1, 0.0, False, 1.0, 0, 20, 0, None, True, True, 1, 0.0),
                     "beam 4": Decoding(4, 0.5, False, 1.0, 0, 20, 0, None, True, True, 2, 1.0)}
    args = cli.build_parser().parse_args(["demo", "--beam", "3"])
    with pytest.raises(cli.CaptionerError, match=r"--beam-groups must be >= 1 and divide "
                                                 r"--beam \(3\), got 2"):
        decodings(cli.with_defaults(args, DecodingDefaults(4, 0.5, 20, True, True, 2, 1.0)))
