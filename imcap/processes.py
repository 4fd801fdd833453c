"""Whether a process still runs: how the leftovers of a killed stage (MLflow runs left RUNNING,
temporary folders) are told apart from work in progress; and a folder locked by the one process
working in it (`lock_folder`: one training per `.imcap/train`)."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

_HELD: dict[Path, int] = {}  # folder -> the descriptor of its lock file, while this process lives


class FolderLockedError(RuntimeError):
    """Another process holds the lock of a folder; the message names it and that process."""


def process_running(pid: int) -> bool:
    """Whether process `pid` exists on this host (in doubt: yes, so that nothing in use is
    touched)."""
    if pid <= 0 or os.name != "posix":  # os.kill(pid, 0) terminates the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def lock_folder(folder: str | Path, work: str) -> None:
    """Hold `folder` for this process until it exits (`<folder>.lock` beside it, `flock`ed, so
    a killed holder frees it); `FolderLockedError` if another process holds it. `work` names
    what holds it, for the message. Processes started by the holder (its environment carries
    the holder's pid) share it: a launcher and the torchrun workers it starts are one job."""
    folder = Path(folder)
    where = folder.absolute()
    key = f"IMCAP_LOCK_{zlib.crc32(str(where).encode()):08x}"
    holder = int(os.environ.get(key, "0"))
    if where in _HELD or (holder and holder != os.getpid() and process_running(holder)):
        return
    if os.name != "posix":
        return
    import fcntl

    folder.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(folder.with_name(folder.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        other = os.pread(descriptor, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(descriptor)
        raise FolderLockedError(f"{folder}: in use by another {work} (pid {other}); wait for "
                                f"it to end or stop it (kill {other}), then rerun") from None
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
    _HELD[where] = descriptor
    os.environ[key] = str(os.getpid())
