"""Progress bars that read well wherever they are written.

On a terminal, tqdm's bar redraws in place. Written to a file or a pipe (`dvc repro > log`, CI,
`dvc queue logs`), carriage-return redraws would pile a whole epoch into one enormous line; there
the same bar prints a plain line at most every `LOG_INTERVAL` seconds, and its final state.
"""

from __future__ import annotations

import sys
from typing import IO, Any

from tqdm import tqdm

LOG_INTERVAL = 30.0  # seconds between progress lines in a log


class _Lines:
    """A stream wrapper that turns tqdm's `\\r<bar>` redraws into one line each."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()
        if line:  # tqdm's redraws start with \r; its bare newlines and clears carry nothing
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(*args: Any, **kwargs: Any) -> tqdm:
    """`tqdm(*args, **kwargs)`, as lines every `LOG_INTERVAL` seconds when not on a terminal."""
    stream = kwargs.get("file") or sys.stderr
    if not getattr(stream, "isatty", lambda: False)():
        kwargs["file"] = _Lines(stream)
        kwargs.setdefault("mininterval", LOG_INTERVAL)
        kwargs.setdefault("maxinterval", LOG_INTERVAL)  # tqdm's monitor: no extra redraws
    return tqdm(*args, **kwargs)
