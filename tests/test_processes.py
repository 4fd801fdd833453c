import os
import subprocess
import sys

from imcap.processes import process_running


def test_a_process_that_exited_is_not_running_and_this_one_is():
    exited = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                            capture_output=True, text=True, check=True)
    assert not process_running(int(exited.stdout))
    assert process_running(os.getpid())


def test_no_pid_counts_as_running_so_nothing_is_touched():
    assert process_running(0)
