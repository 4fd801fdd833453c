"""A local HTTP file server for download tests: 127.0.0.1 only, Range requests, injectable faults.

`http.server.SimpleHTTPRequestHandler` ignores `Range`, so resuming could not be tested with it.
Use through the `http_server` fixture (tests/conftest.py):

    def test_x(http_server):
        (http_server.root / "a.zip").write_bytes(data)
        download(http_server.url("a.zip"), dest)
        assert http_server.requests[-1].range is None
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


@dataclass
class Logged:
    path: str
    range: str | None
    status: int


class LocalServer:
    """Serves the files under `root`. Faults, each set by the test:

    - `ignore_range`: answer every request with the whole file (200), as some servers do;
    - `drop_after`: the next response announces the full length but the connection closes after
      this many body bytes (a one-shot interruption; reset to None once used).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.ignore_range = False
        self.drop_after: int | None = None
        self.requests: list[Logged] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    def start(self) -> LocalServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def _take_drop(self) -> int | None:
        with self._lock:
            drop, self.drop_after = self.drop_after, None
            return drop


def _handler_for(server: LocalServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:
            rel = unquote(urlsplit(self.path).path).lstrip("/")
            path = (server.root / rel).resolve()
            requested = self.headers.get("Range")
            if not path.is_file() or server.root.resolve() not in path.parents:
                return self._reply(rel, requested, 404, b"not found")
            data = path.read_bytes()
            match = re.fullmatch(r"bytes=(\d+)-", requested or "")
            if match and not server.ignore_range:
                start = int(match.group(1))
                if start >= len(data):
                    return self._reply(rel, requested, 416, b"",
                                       {"Content-Range": f"bytes */{len(data)}"})
                headers = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
                return self._reply(rel, requested, 206, data[start:], headers)
            return self._reply(rel, requested, 200, data)

        def _reply(self, rel: str, requested: str | None, status: int, body: bytes,
                   headers: dict[str, str] | None = None) -> None:
            server.requests.append(Logged(rel, requested, status))
            drop = server._take_drop() if status in (200, 206) else None
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            if drop is not None:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body if drop is None else body[:drop])
            if drop is not None:
                self.wfile.flush()
                self.close_connection = True

    return Handler

