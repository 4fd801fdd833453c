"""The demo app (imcap.demo) served by a real uvicorn on a free 127.0.0.1 port, in a thread, for
tests; built from a miniature project the way `imcap demo --root` builds it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI

from imcap import cli
from imcap.demo import command


def demo_app(monkeypatch: pytest.MonkeyPatch, *argv: str | Path) -> tuple[FastAPI, str, int]:
    """The app, host and port `imcap demo ARGV` would serve (through the real parser and
    dispatch); the serving itself is left to `served`."""
    served: list[tuple[FastAPI, str, int]] = []
    monkeypatch.setattr(command, "serve", lambda app, host, port: served.append((app, host, port)))
    status = cli.main(["demo", "--device", "cpu", *map(str, argv)])
    assert status == 0 and len(served) == 1
    return served[0]


@contextmanager
def served(app: FastAPI) -> Iterator[str]:
    """The base URL (`http://127.0.0.1:PORT`) of `app` while the block runs."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the demo server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
