"""How the stage scripts (and the `imcap` command) report a problem the user can fix: one line,
`<stage>: <message>` on stderr, exit status 1, instead of a traceback around that message.

What counts as such a problem is a convention: every exception class the `imcap` package
defines carries a message that says what is wrong and where (`ParamError`, `SourceError`,
`DownloadError`, `StoreFormatError`, ...); define one only for that. Anything else (a bug, a
library's own error) keeps its traceback. Recognising them by the module that defines them,
rather than importing each class here, keeps this module import-free: it adds no code to any
stage's DVC dependencies.

The GPU running out of memory (torch's `OutOfMemoryError`) is such a problem too: one line
naming the batch size to lower (`out_of_memory`).

Interrupted — Ctrl-C (SIGINT) or SIGTERM — a stage prints one line `<stage>: interrupted` and
exits 130 or 143, after every `with` has unwound: its temporaries are removed, its MLflow run
ended KILLED. A second SIGTERM ends it at once. An interruption that lands in a finalizer or a
weakref callback (where Python prints "Exception ignored" and carries on) is raised again in the
stage's own code. DVC does not pass SIGTERM on to the stage it runs: under DVC (`DVC_STAGE` set)
a stage also stops that way once its DVC process is gone (`watch_parent`), so it never trains on
as an orphan beside the next `dvc repro`. The `stages` package starts that watch as it is
imported, before a stage's own (slow) imports: recorded later, the parent could already be gone.
"""

from __future__ import annotations

import _thread
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

PACKAGE = __name__.partition(".")[0]
SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "fish"})  # DVC runs `$SHELL -c cmd`
REDELIVERY_DELAY = 0.01  # seconds: an interruption swallowed in a finalizer is raised again


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread as Ctrl-C's KeyboardInterrupt is (so every handler of
    that, such as `imcap.tracking.mlflow_run`'s, treats it the same)."""


def is_user_error(error: BaseException) -> bool:
    """Whether `error` is one of this package's clear-message exceptions."""
    return type(error).__module__.partition(".")[0] == PACKAGE


def run_stage(name: str, main: Callable[[], None], batch_size: str | None = None) -> None:
    """Run a stage's `main`; a user error is printed as one line and exits with status 1, an
    interruption as `<name>: interrupted` with status 130 (Ctrl-C) or 143 (SIGTERM). A stage
    that uses the GPU names its `batch_size` param, to lower when the GPU runs out of memory."""
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
    previous_hook = sys.unraisablehook
    if in_main_thread:
        sys.unraisablehook = _reraise_swallowed_interruption(previous_hook)
    if os.environ.get("DVC_STAGE"):
        watch_parent()
    try:
        main()
    except KeyboardInterrupt as interrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        sys.exit(143 if isinstance(interrupt, Terminated) else 130)
    except Exception as error:
        message = out_of_memory(error, batch_size) if batch_size else None
        if message is None and not is_user_error(error):
            raise
        print(f"{name}: {message or error}", file=sys.stderr)
        sys.exit(1)
    finally:
        sys.unraisablehook = previous_hook
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def out_of_memory(error: BaseException, lower: str) -> str | None:
    """The one line for torch's out-of-memory error on the GPU (`torch.OutOfMemoryError`, known
    by its name: this module imports no torch), saying to lower `lower`; None for any other."""
    kind = type(error)
    if kind.__name__ != "OutOfMemoryError" or kind.__module__.partition(".")[0] != "torch":
        return None
    tried = re.search(r"Tried to allocate [\d.]+ \w+", str(error))
    return (f"out of GPU memory{f' ({tried[0]})' if tried else ''}; lower {lower}, or free the "
            "GPU of other processes")


@contextmanager
def interruption_held() -> Iterator[None]:
    """A SIGTERM that arrives during the block is raised when it ends: for the few renames that
    put a stage's outputs in place all together, or none of them."""
    _held.append(False)
    try:
        yield
    finally:
        arrived = _held.pop()
    if arrived:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated


_held: list[bool] = []  # one entry per `interruption_held` block: whether a SIGTERM came


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    if _held:
        _held[-1] = True
        return
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    raise Terminated


def _reraise_swallowed_interruption(
        fallback: Callable[[sys.UnraisableHookArgs], object]
) -> Callable[[sys.UnraisableHookArgs], None]:
    """A `sys.unraisablehook` that raises an interruption swallowed in a finalizer (`__del__`, a
    weakref callback) again, once the main thread has left it (raised in the hook itself, it
    would be swallowed again); else `fallback`."""
    def hook(unraisable: sys.UnraisableHookArgs) -> None:
        in_main_thread = threading.current_thread() is threading.main_thread()
        if not (in_main_thread and issubclass(unraisable.exc_type, KeyboardInterrupt)):
            fallback(unraisable)
            return
        signum = signal.SIGINT
        if issubclass(unraisable.exc_type, Terminated):
            signum = signal.SIGTERM
            signal.signal(signum, _raise_terminated)
        later = threading.Timer(REDELIVERY_DELAY, _thread.interrupt_main, (signum,))
        later.daemon = True
        later.start()

    return hook


def watch_parent(interval: float = 1.0) -> threading.Thread:
    """Send this process SIGTERM once the process that started it is gone (this process is
    re-parented) — or, when that is a shell that did not `exec` the command, once the shell's
    own parent is. A daemon thread polling every `interval` seconds, one per process (a second
    call returns the first's); the shell check needs Linux's /proc (elsewhere only the direct
    parent is watched)."""
    global _watcher
    if _watcher is not None:  # started when the `stages` package was imported
        return _watcher
    parent = os.getppid()
    links = []  # (pid, its parent at the start) of the shell between DVC and this process
    if _command_name(parent) in SHELLS and (grandparent := _parent_of(parent)) is not None:
        links.append((parent, grandparent))

    def watch() -> None:
        while os.getppid() == parent and all(_parent_of(pid) == ppid for pid, ppid in links):
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGTERM)

    _watcher = threading.Thread(target=watch, name="imcap-watch-parent", daemon=True)
    _watcher.start()
    return _watcher


_watcher: threading.Thread | None = None


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name: state, parent pid, ..."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()
    except OSError:
        return None


def _parent_of(pid: int) -> int | None:
    """The parent of a live process `pid`; None if it is gone (or there is no /proc)."""
    fields = _proc_stat(pid)
    return int(fields[1]) if fields and fields[0] not in ("Z", "X") else None


def _command_name(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm") as comm:
            return comm.read().strip()
    except OSError:
        return None
