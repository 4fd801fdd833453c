"""Servers a test starts as real processes on 127.0.0.1: a free port, and waiting until one
answers (failing with its output if it exits first)."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, timeout: float = 180) -> None:
    """Poll `url` until it answers; `process` exiting first fails the test (with its output,
    when its stdout is a text pipe)."""
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, (
            f"the server exited: {process.stdout.read() if process.stdout else ''}")
        assert time.monotonic() < deadline, f"{url} did not answer within {timeout} s"
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
