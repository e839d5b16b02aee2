"""The terminal progress display: shown on a real pseudo-terminal, absent on a pipe; the log lines
("N/M requests done", what the Prefect UI shows) are the same either way."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = """
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
from tasks import progress
from tasks.bench import _Progress
with progress.terminal_display(cells=2):
    first = _Progress("cell one", every_s=3600)
    for i in range(1, 5):
        first(i, 4)
    progress.build_line("bakeoff/img", "Step 1/3 : FROM base")
    progress.build_done("bakeoff/img")
    second = _Progress("cell two", every_s=3600)
    for i in range(1, 3):
        second(i, 2)
"""


def run(stdout_is_tty: bool) -> tuple[str, str]:
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "PYTHONPATH": str(ROOT)}
    env.pop("NO_COLOR", None)
    if not stdout_is_tty:
        done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, env=env)
        assert done.returncode == 0, done.stderr
        return done.stdout, done.stderr
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=slave, stderr=subprocess.PIPE, text=True, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0, err
    return b"".join(chunks).decode("utf-8", "replace"), err


def test_a_terminal_gets_the_rich_display_and_the_same_log_lines():
    out, err = run(stdout_is_tty=True)
    assert "cell two" in out and "2/2" in out and "━" in out, out
    assert "build bakeoff/img: done" in out, out
    assert err.splitlines() == ["cell one: 4/4 requests done", "cell two: 2/2 requests done"]


def test_without_a_terminal_nothing_changes():
    out, err = run(stdout_is_tty=False)
    assert out == ""
    assert err.splitlines() == ["cell one: 4/4 requests done", "cell two: 2/2 requests done"]
