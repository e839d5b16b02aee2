"""One night per host: a real second process holds the lock; the first is refused naming it, and the
lock is free again once the holder is SIGKILLed (the kernel drops a dead process's flock)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tasks.hostlock import HostBusy, night_on_this_host

ROOT = Path(__file__).resolve().parent.parent
HOLDER = textwrap.dedent(
    """
    import time
    from tasks.hostlock import night_on_this_host
    with night_on_this_host("night-A", "nightly-gpu"):
        print("holding", flush=True)
        time.sleep(600)
    """
)


def test_a_second_night_is_refused_naming_the_first_and_a_killed_holder_frees_the_host(tmp_path, monkeypatch):
    monkeypatch.setenv("BAKEOFF_LOCK_DIR", str(tmp_path))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        with pytest.raises(HostBusy) as err, night_on_this_host("night-B", "cpu-smoke"):
            pass
        message = str(err.value)
        assert "\n" not in message and err.value.exit_code == 75
        assert f"run night-A (matrix nightly-gpu, pid {holder.pid}, since " in message
    finally:
        holder.kill()  # SIGKILL: no Python code of the holder runs
        holder.wait()
    with night_on_this_host("night-B", "cpu-smoke") as path:
        assert '"run_id": "night-B"' in path.read_text()
    with night_on_this_host("night-C", "cpu-smoke"):  # released when the first block ended
        pass


def test_a_second_night_may_wait_for_the_first_to_end(tmp_path, monkeypatch, caplog):
    """BAKEOFF_HOST_WAIT_S: the second night waits (saying for whom) and goes on once the first ends."""
    import logging

    monkeypatch.setenv("BAKEOFF_LOCK_DIR", str(tmp_path))
    monkeypatch.setenv("BAKEOFF_HOST_WAIT_S", "120")
    brief = HOLDER.replace("time.sleep(600)", "time.sleep(2)") + 'print("released", flush=True)\ntime.sleep(600)\n'
    holder = subprocess.Popen(
        [sys.executable, "-c", brief],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        with caplog.at_level(logging.WARNING, logger="bakeoff.hostlock"), night_on_this_host("night-B", "cpu-smoke"):
            assert holder.stdout.readline() == "released\n"  # it got the host once the first night had ended
    finally:
        holder.kill()
        holder.wait()
    assert "run night-A (matrix nightly-gpu" in caplog.text and "waiting up to 120 s" in caplog.text


def test_a_bad_wait_is_one_line(monkeypatch, tmp_path):
    from tasks.errors import BadInput

    monkeypatch.setenv("BAKEOFF_LOCK_DIR", str(tmp_path))
    monkeypatch.setenv("BAKEOFF_HOST_WAIT_S", "soon")
    with pytest.raises(BadInput, match="BAKEOFF_HOST_WAIT_S='soon'"), night_on_this_host("n", "m"):
        pass
