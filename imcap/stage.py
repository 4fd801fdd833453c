"""How the stage scripts (and the `imcap` command) report a problem the user can fix: one line,
`<stage>: <message>` on stderr, exit status 1, instead of a traceback around that message.

What counts as such a problem is a convention: every exception class the `imcap` package
defines carries a message that says what is wrong and where (`ParamError`, `SourceError`,
`DownloadError`, `StoreFormatError`, ...); define one only for that. Anything else (a bug, a
library's own error) keeps its traceback. Recognising them by the module that defines them,
rather than importing each class here, keeps this module import-free: it adds no code to any
stage's DVC dependencies.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

PACKAGE = __name__.partition(".")[0]


def is_user_error(error: BaseException) -> bool:
    """Whether `error` is one of this package's clear-message exceptions."""
    return type(error).__module__.partition(".")[0] == PACKAGE


def run_stage(name: str, main: Callable[[], None]) -> None:
    """Run a stage's `main`; a user error is printed as one line and exits with status 1."""
    try:
        main()
    except Exception as error:
        if not is_user_error(error):
            raise
        print(f"{name}: {error}", file=sys.stderr)
        sys.exit(1)
