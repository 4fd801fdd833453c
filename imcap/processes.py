"""Whether a process still runs: how the leftovers of a killed stage (MLflow runs left RUNNING,
temporary folders) are told apart from work in progress."""

from __future__ import annotations

import os


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
