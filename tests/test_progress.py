"""Progress bars in a log are lines, not one line of carriage-return redraws."""

from __future__ import annotations

import io

from imcap.progress import progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_written_to_a_file_is_one_line_per_update_and_no_carriage_returns():
    log = io.StringIO()
    for _ in progress_bar(range(500), file=log, desc="epoch 1", mininterval=0):
        pass
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert len(lines) >= 2 and all(line.startswith("epoch 1:") for line in lines)
    assert "500/500" in lines[-1]


def test_a_bar_in_a_log_waits_between_lines():
    log = io.StringIO()
    for _ in progress_bar(range(10_000), file=log, desc="x"):
        pass
    assert len(log.getvalue().splitlines()) <= 3  # start, end: nothing in between in 30 s


def test_on_a_terminal_the_bar_redraws_in_place():
    screen = Terminal()
    for _ in progress_bar(range(500), file=screen, mininterval=0):
        pass
    assert "\r" in screen.getvalue()
