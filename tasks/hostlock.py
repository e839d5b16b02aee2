"""One night per host at a time: two benchmarks on one machine measure each other.

A night holds an exclusive `flock` on one file per host ($BAKEOFF_LOCK_DIR, else
$XDG_CACHE_HOME/bakeoff, else ~/.cache/bakeoff: `night.lock`) from its first engine to its last
teardown. The kernel drops the lock when the holder dies, SIGKILL included, so a crashed night never
blocks the next. A second night (a manual `bakeoff run` beside the scheduled one, or two at once) is
refused at once with who holds the host; Prefect's deployment concurrency limit covers scheduled runs,
this covers every way a night starts.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from tasks.errors import Busy


class HostBusy(Busy):
    """Another night holds this host."""


def lock_path() -> Path:
    if os.environ.get("BAKEOFF_LOCK_DIR"):
        return Path(os.environ["BAKEOFF_LOCK_DIR"]) / "night.lock"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "bakeoff" / "night.lock"


@contextlib.contextmanager
def night_on_this_host(run_id: str, matrix_name: str) -> Iterator[Path]:
    """Hold the host for one night; HostBusy (exit 75, one line naming the holder) when another night has it."""
    path = lock_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise HostBusy(_holder_line(path)) from None
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
