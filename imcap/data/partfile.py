"""`<dest>.part`, a download in progress, and the record that makes resuming it safe.

The record, `<dest>.part.json`, holds the URL the bytes came from, the validator the server sent
with them (a strong ETag, else Last-Modified) and the file's size when known. A resume sends the
validator as `If-Range`, so the server answers with the whole file if it has changed since; a
`.part` without a record (an older imcap, a crash before the record was written) or from another
URL is started over instead of continued.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


class PartFile:
    """The `.part` at `path` of a download of `url`, with what its record says about it."""

    def __init__(self, path: Path, url: str) -> None:
        self.path = path
        self.url = url
        self.record = path.with_name(path.name + ".json")
        self.validator: str | None = None
        self.total: int | None = None
        try:
            saved = json.loads(self.record.read_text())
        except (OSError, ValueError):
            return
        if isinstance(saved, dict) and saved.get("url") == url:
            self.validator, self.total = saved.get("validator"), saved.get("total")

    def size(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def resumable_offset(self) -> int:
        """How many bytes to keep: all of them when the record allows a resume, else 0."""
        size = self.size()
        if not self.validator or (self.total is not None and size > self.total):
            return 0
        return size

    def begin(self, validator: str | None, total: int | None) -> None:
        """Record a new transfer from the first byte (the caller rewrites the file)."""
        self.validator, self.total = validator, total
        self._save()

    def same_version(self, validator: str | None, total: int | None) -> bool:
        """Whether a resumed response is of the version the bytes so far came from."""
        return (validator is None or validator == self.validator) and (
            total is None or self.total is None or total == self.total)

    def learn_total(self, total: int) -> None:
        """The file's size, first announced by a resumed response."""
        self.total = total
        self._save()

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
        self.record.unlink(missing_ok=True)
        self.validator = self.total = None

    def finish(self, dest: Path) -> None:
        """The complete file takes its final name; the record goes."""
        os.replace(self.path, dest)
        self.record.unlink(missing_ok=True)

    def _save(self) -> None:
        self.record.write_text(json.dumps({"url": self.url, "validator": self.validator,
                                           "total": self.total}))
