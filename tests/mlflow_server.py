"""A real `mlflow server` as a team would start it, for the tests that track to one: SQLite
backend and artifact root in a folder of the test's, on a free port of 127.0.0.1; stopped (the
server and its uvicorn worker) when the block ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from local_process import free_port, wait_until_up

BIN = Path(sys.executable).parent


def client_env(url: str) -> dict[str, str]:
    """This process's environment for a stage or CLI reaching the server at `url` (none of
    the caller's MLFLOW_ settings; no proxy for 127.0.0.1). A one-worker server on a loaded
    test machine may take longer than imcap's 5 s per request: allow it 60."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return env | {"MLFLOW_TRACKING_URI": url, "MLFLOW_DISABLE_TELEMETRY": "true",
                  "MLFLOW_HTTP_REQUEST_TIMEOUT": "60", "NO_PROXY": "127.0.0.1",
                  "no_proxy": "127.0.0.1"}


@contextmanager
def mlflow_server(home: Path) -> Iterator[str]:
    """The server's URL; its store is `home`/mlflow.db, its artifact root `home`/artifacts,
    its log `home`/server.log (a file: it logs every request, and a pipe nobody reads would
    fill and stall it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    port = free_port()
    log = home / "server.log"
    with open(log, "w") as output:
        process = subprocess.Popen(
            [BIN / "mlflow", "server", "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
             "--artifacts-destination", (home / "artifacts").as_uri(), "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1"],
            env=env | {"PATH": f"{BIN}{os.pathsep}{env['PATH']}",
                       "MLFLOW_DISABLE_TELEMETRY": "true"},
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until_up(f"{url}/health", process, timeout=120)
        except AssertionError as err:
            raise AssertionError(f"{err}\n{log.read_text()}") from None
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the server and its uvicorn worker, started here
        try:
            process.wait(timeout=3)
        except subprocess.TimeoutExpired:  # waiting for clients' kept-alive connections to close
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
