"""Reading a stage's output back (in a later stage, `imcap caption`, the served model): a file
that is missing or damaged (truncated by a full disk or a copy, edited by hand) ends in one line
that names it and the command that writes it again, instead of the traceback of whichever
library choked on it (`PytorchStreamReader failed…`, `BadZipFile`, `JSONDecodeError`).

Only what decoding a file raises means "damaged": a loader checks the structure it reads and
raises `ValueError` for the wrong one, and turns its library's decoding errors into one (torch's
are `RuntimeError`s). Anything else — a CUDA out-of-memory or driver error, a bug — keeps its
own message: never "damaged, rerun the stage" for a file that is fine."""

from __future__ import annotations

import json
import pickle
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

# What decoding a damaged file raises: a truncated zip (numpy: BadZipFile, zlib.error, OSError;
# torch: OSError), an empty or cut file (EOFError, ValueError), bad pickle, bad JSON or encoding
# (ValueError), the wrong structure (the loader's ValueError).
DAMAGED_FILE_ERRORS = (OSError, EOFError, pickle.UnpicklingError, ValueError, zipfile.BadZipFile,
                       zlib.error)
T = TypeVar("T")


class OutputFileError(Exception):
    """A stage's output is missing or damaged: the message names it and how to rebuild it."""


def read_output(path: str | Path, load: Callable[[Path], T], *, stage: str) -> T:
    """`load(path)`, where `path` is written by the DVC stage `stage`; a missing or damaged file
    is an `OutputFileError`."""
    path = Path(path)
    rebuild = f"the {stage} stage writes it: `dvc repro -f -s {stage}`"
    if not path.is_file():
        raise OutputFileError(f"{path}: not found; {rebuild}")
    try:
        return load(path)
    except DAMAGED_FILE_ERRORS as err:
        detail = next(iter(str(err).splitlines()), "")[:200]  # torch's run to paragraphs
        raise OutputFileError(f"{path}: damaged or incomplete ({type(err).__name__}: "
                              f"{detail}); {rebuild}") from err


def read_json(path: str | Path, *, stage: str) -> dict[str, Any]:
    """The JSON object in `path`, written by `stage`, guarded as `read_output`."""
    return read_output(path, _json_object, stage=stage)


def _json_object(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, found {type(data).__name__}")
    return data
