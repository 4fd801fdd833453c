"""`imcap demo`: load the model the way `imcap caption` does (DVC outputs under `--root`, or
`--run-id`: an MLflow run or registered version), with the same decoding defaults, then serve the
demo page with uvicorn on `--host`:`--port`."""

from __future__ import annotations

import argparse
import errno
import math
import socket
import tempfile
from dataclasses import replace
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from imcap.captioner import Artifacts, Captioner, CaptionerError, Decoding
from imcap.cli import beam_problems, with_defaults
from imcap.demo.app import create_app
from imcap.devices import pick_device
from imcap.model.checkpoint import checkpoint_record
from imcap.model_lookup import find_artifacts, logged_train_run
from imcap.tracking import tracking_uri


def check(args: argparse.Namespace) -> None:
    """One error naming every bad option; decoding options left out (None) take the model's
    defaults, valid by construction."""
    problems = [f"--{name} must be {rule}, got {value}" for name, value, ok, rule in (
        ("beam", args.beam, args.beam is None or args.beam >= 1, ">= 1"),
        ("length-penalty", args.length_penalty,
         args.length_penalty is None or 0 <= args.length_penalty < math.inf,
         "a finite number >= 0"),
        ("max-length", args.max_length, args.max_length is None or args.max_length >= 1, ">= 1"),
        ("max-upload-mb", args.max_upload_mb, 0 < args.max_upload_mb < math.inf,
         "a finite number > 0"),
        ("port", args.port, 1 <= args.port <= 65535, "between 1 and 65535"))
        if not ok]
    if problems:
        raise CaptionerError("; ".join(problems))


def decodings(args: argparse.Namespace) -> dict[str, Decoding]:
    """Greedy (beam 1 in one group, no length penalty: exactly greedy decoding) and beam
    `--beam`, both with the decoding rules."""
    problems = beam_problems(args)
    if problems:
        raise CaptionerError("; ".join(problems))
    beams = {"greedy": (1, 0.0, 1, 0.0),
             f"beam {args.beam}": (args.beam, args.length_penalty, args.beam_groups,
                                   args.diversity_lambda)}
    return {name: Decoding(beam, penalty, sample=False, temperature=1.0, top_k=0,
                           max_length=args.max_length, min_length=0,
                           block_trigrams=args.block_trigrams,
                           remove_bad_endings=args.remove_bad_endings, beam_groups=groups,
                           diversity_lambda=diversity)
            for name, (beam, penalty, groups, diversity) in beams.items()}


def describe(source: str, artifacts: Artifacts, captioner: Captioner) -> dict[str, str]:
    """What the page says produced the captions: where it was read from, the MLflow run that
    trained it, the epoch and validation BLEU-4 its checkpoint records, its parts."""
    record = checkpoint_record(artifacts.checkpoint)
    return {"source": source, "run": artifacts.train_run or "none logged",
            "epoch": str(record.epoch), "validation BLEU-4": f"{record.val_bleu4:.2f}",
            "decoder": str(artifacts.checkpoint.name),
            "encoder": f"{artifacts.encoder} (weights {artifacts.weights}, "
                       f"{artifacts.image_size} px)",
            "attention": str(captioner.model.config.attention),
            "vocabulary": f"{len(captioner.vocab):,} words"}


def demo_app(args: argparse.Namespace) -> FastAPI:
    device = pick_device(args.device, "--device")
    check(args)
    root = Path(args.root)
    with tempfile.TemporaryDirectory(prefix="imcap-run-") as tmp:
        artifacts = find_artifacts(args.run_id, root, Path(tmp))
        rules = decodings(with_defaults(args, artifacts.defaults))
        if args.run_id:
            named = args.run_id if args.run_id.startswith("models:/") else f"run {args.run_id}"
            source = f"MLflow {named} ({tracking_uri()})"
        else:
            source = f"DVC outputs in {root.resolve()}"
            artifacts = replace(artifacts, train_run=logged_train_run(artifacts.checkpoint, root))
        captioner = Captioner(artifacts, device)
        model = describe(source, artifacts, captioner)
    return create_app(captioner, model, rules, max_bytes=round(args.max_upload_mb * 2**20))


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on `host`:`port`, bound before anything is printed: a port in use
    is one error naming it (uvicorn would log its own and exit)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family)
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise CaptionerError(f"port {port} on {host} is in use; stop what uses it or "
                                 "choose another --port") from None
        raise CaptionerError(f"cannot listen on {host}:{port} "
                             f"({err.strerror or err}); check --host and --port") from None


def serve(app: FastAPI, host: str, port: int) -> None:
    sock = listen(host, port)
    print(f"imcap demo: open http://{host}:{port}/ (Ctrl+C stops it)", flush=True)
    with sock:
        uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


def demo_command(args: argparse.Namespace) -> None:
    serve(demo_app(args), args.host, args.port)
