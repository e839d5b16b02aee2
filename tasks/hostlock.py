"""One night per host at a time: two benchmarks on one machine measure each other.

A night holds an exclusive `flock` on one file per host ($BAKEOFF_LOCK_DIR, else
$XDG_CACHE_HOME/bakeoff, else ~/.cache/bakeoff: `night.lock`) from its first engine to its last
teardown. The kernel drops the lock when the holder dies, SIGKILL included, so a crashed night never
blocks the next. A second night (a manual `bakeoff run` beside the scheduled one, or two at once) is
refused with who holds the host, at once or after waiting up to $BAKEOFF_HOST_WAIT_S seconds (default
0) for it to end, with a log line saying who it waits for; Prefect's deployment concurrency limit
covers scheduled runs, this covers every way a night starts.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from tasks.errors import BadInput, Busy

log = logging.getLogger("bakeoff.hostlock")


class HostBusy(Busy):
    """Another night holds this host."""


def lock_path() -> Path:
    if os.environ.get("BAKEOFF_LOCK_DIR"):
        return Path(os.environ["BAKEOFF_LOCK_DIR"]) / "night.lock"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "bakeoff" / "night.lock"


def host_wait_s() -> float:
    raw = os.environ.get("BAKEOFF_HOST_WAIT_S") or "0"
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise BadInput(f"BAKEOFF_HOST_WAIT_S={raw!r}: seconds to wait for another night, a number >= 0")
    return value


@contextlib.contextmanager
def night_on_this_host(run_id: str, matrix_name: str, wait_s: float | None = None) -> Iterator[Path]:
    """Hold the host for one night. When another night has it, wait up to `wait_s` (None:
    $BAKEOFF_HOST_WAIT_S) for it to end, then HostBusy (exit 75, one line naming the holder)."""
    wait_s = host_wait_s() if wait_s is None else wait_s
    path = lock_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise HostBusy(_holder_line(path)) from None
                if not told:
                    log.warning("%s: waiting up to %.0f s for it to end", _holder_line(path).split(";")[0], wait_s)
                    told = True
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        os.ftruncate(fd, 0)
        holder = {"run_id": run_id, "matrix": matrix_name, "pid": os.getpid(), "since": datetime.now(UTC).isoformat()}
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing the descriptor drops the lock


def _holder_line(path: Path) -> str:
    try:
        h = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        h = {}
    who = (
        f"run {h.get('run_id')} (matrix {h.get('matrix')}, pid {h.get('pid')}, since {h.get('since')})"
        if h
        else "another process"
    )
    return f"another night is running on this host: {who}; wait for it to end, or stop it ({path})"
