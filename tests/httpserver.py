"""A local HTTP file server for download tests: 127.0.0.1 only, Range requests, injectable faults.

`http.server.SimpleHTTPRequestHandler` ignores `Range`, so resuming could not be tested with it.
Use through the `http_server` fixture (tests/conftest.py):

    def test_x(http_server):
        (http_server.root / "a.zip").write_bytes(data)
        download(http_server.url("a.zip"), dest)
        assert http_server.requests[-1].range is None

Every file is served with a strong `ETag` (a hash of its bytes) and a `Last-Modified` (its mtime),
and `If-Range` is honoured: a Range request whose validator no longer matches gets the whole file.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


@dataclass
class Logged:
    path: str
    range: str | None
    status: int
    if_range: str | None = None


class LocalServer:
    """Serves the files under `root`. Faults, each set by the test:

    - `ignore_range`: answer every request with the whole file (200), as some servers do;
    - `drop_after`: the next response announces the full length but the connection closes after
      this many body bytes (a one-shot interruption; reset to None once used);
    - `no_length`: send no Content-Length; the body ends when the connection closes;
    - `shift_range`: a 206 starts this many bytes after the offset asked for (its Content-Range
      says so);
    - `range_limit`: a 206 carries at most this many bytes (0: none at all, a broken server),
      as CDNs that cap ranges do; its Content-Range says so;
    - `send_validators`: False sends neither ETag nor Last-Modified.

    `routes` maps a raw request path (still %-encoded, e.g. `/..%2Fx`) to a file under `root`.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.ignore_range = False
        self.drop_after: int | None = None
        self.no_length = False
        self.shift_range = 0
        self.range_limit: int | None = None
        self.send_validators = True
        self.routes: dict[str, str] = {}
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


def validators(path: Path) -> dict[str, str]:
    """The ETag and Last-Modified the server sends with the file at `path`."""
    data = path.read_bytes()
    return {"ETag": f'"{hashlib.sha256(data).hexdigest()[:16]}"',
            "Last-Modified": formatdate(path.stat().st_mtime, usegmt=True)}


def _handler_for(server: LocalServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:
            raw = urlsplit(self.path).path
            rel = server.routes.get(raw) or unquote(raw).lstrip("/")
            path = (server.root / rel).resolve()
            requested = self.headers.get("Range")
            if not path.is_file() or server.root.resolve() not in path.parents:
                return self._reply(rel, requested, 404, b"not found")
            data = path.read_bytes()
            tags = validators(path) if server.send_validators else {}
            if_range = self.headers.get("If-Range")
            current = if_range is None or if_range in tags.values()
            match = re.fullmatch(r"bytes=(\d+)-", requested or "")
            if match and current and not server.ignore_range:
                start = int(match.group(1))
                if start >= len(data):
                    return self._reply(rel, requested, 416, b"",
                                       {"Content-Range": f"bytes */{len(data)}"})
                start = min(start + server.shift_range, len(data) - 1)
                limit = len(data) if server.range_limit is None else server.range_limit
                end = min(len(data), start + limit)
                headers = {**tags,
                           "Content-Range": f"bytes {start}-{end - 1}/{len(data)}"}
                return self._reply(rel, requested, 206, data[start:end], headers)
            return self._reply(rel, requested, 200, data, tags)

        def _reply(self, rel: str, requested: str | None, status: int, body: bytes,
                   headers: dict[str, str] | None = None) -> None:
            server.requests.append(Logged(rel, requested, status, self.headers.get("If-Range")))
            drop = server._take_drop() if status in (200, 206) else None
            close = drop is not None or (server.no_length and status in (200, 206))
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            if not (server.no_length and status in (200, 206)):
                self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            if close:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body if drop is None else body[:drop])
            if close:
                self.wfile.flush()
                self.close_connection = True

    return Handler
