"""Run an engine as a local process: start, wait until healthy, tear down (always).

The process gets its own process group so teardown reaches anything it spawned (and Ctrl-C in the
terminal reaches bakeoff only, which then stops it). Three things make sure no engine outlives bakeoff:
every live instance is registered for an atexit sweep (a normal or SIGTERM exit); on Linux the engine
asks the kernel for SIGKILL when bakeoff dies (PR_SET_PDEATHSIG: a SIGKILL or a crash of bakeoff, where
no Python code runs); and each engine has a pid file under `engines_dir()` that the next night reads
(`remove_leftovers`) to kill an engine whose bakeoff is gone, should one have survived all the same.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import json
import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tasks.engines import EngineAdapter, LaunchSpec
from tasks.launch import masked
from tasks.telemetry import rss_bytes

log = logging.getLogger("bakeoff.launcher")

_LIVE: set[ProcessInstance] = set()
_PR_SET_PDEATHSIG = 1


class DeploymentFailed(RuntimeError):
    """An instance that did not come up; a recorded result, not a crash."""

    def __init__(self, failure_class: str, message: str, log_excerpt: str = "") -> None:
        super().__init__(f"{failure_class}: {message}")
        self.failure_class = failure_class
        self.log_excerpt = log_excerpt


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tail(path: Path, max_lines: int = 40, max_bytes: int = 64_000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-max_lines:])


def engines_dir() -> Path:
    """Where a pid file per live process engine is kept ($BAKEOFF_ENGINES_DIR, else
    $XDG_CACHE_HOME/bakeoff/engines, else ~/.cache/bakeoff/engines)."""
    if os.environ.get("BAKEOFF_ENGINES_DIR"):
        return Path(os.environ["BAKEOFF_ENGINES_DIR"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "bakeoff" / "engines"


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), None if it is
    gone or a zombie: with the pid it names one process, never a later one that reuses the pid."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # fields[0] is field 3 (state); field 22 (starttime) is fields[19].
    return None if fields[0] in ("Z", "X") else int(fields[19])


def _cmdline(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return None


def _die_with_parent():
    """A preexec_fn asking the kernel to SIGKILL the child when its parent dies (Linux), or None.

    libc and prctl are looked up here, before the fork; the child only calls them. The signal is
    tied to the thread that forks: bakeoff starts engines from its main thread (Prefect runs a sync
    flow's tasks there). If bakeoff died between the fork and the prctl, the child exits at once."""
    if not Path("/proc/self/stat").exists():
        return None
    try:
        prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def write_pid_file(pid: int, argv: list[str], *, owner_pid: int | None = None, directory: Path | None = None) -> Path:
    """Record an engine (pid, start time, command line) and the bakeoff that owns it (default this
    process) as DIRECTORY/PID.json, for `remove_leftovers`."""
    owner_pid = owner_pid or os.getpid()
    entry = {
        "pid": pid,
        "start_time": start_time(pid),
        "cmdline": _cmdline(pid) or list(argv),
        "owner_pid": owner_pid,
        "owner_start_time": start_time(owner_pid),
        "host": socket.gethostname(),
    }
    path = (directory or engines_dir()) / f"{pid}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(entry))
    tmp.replace(path)
    return path


# What a process engine inherits from bakeoff's environment: what a program needs to run and find its
# libraries and GPU, never the rest (a token in bakeoff's environment reaches an engine only through the
# engine's `secret_env`, which names it).
INHERITED_ENV = ("PATH", "HOME", "USER", "LANG", "LC_ALL", "TZ", "TMPDIR", "LD_LIBRARY_PATH", "XDG_CACHE_HOME")
INHERITED_ENV_PREFIXES = ("CUDA_", "NVIDIA_", "OMP_", "GGML_", "HIP_", "ROCR_")


def engine_base_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k in INHERITED_ENV or k.startswith(INHERITED_ENV_PREFIXES)}


@dataclass(eq=False)
class ProcessInstance:
    adapter: EngineAdapter
    spec: LaunchSpec
    log_path: Path
    proc: subprocess.Popen | None = None
    pid_file: Path | None = None  # under engines_dir(), while the engine runs

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.spec.port}"

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log.info("starting %s", " ".join(masked(self.spec.argv)))
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(
                self.spec.argv,
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**engine_base_environment(), **self.spec.env},
                start_new_session=True,
                preexec_fn=_die_with_parent(),
            )
        _LIVE.add(self)
        self._write_pid_file()

    def _write_pid_file(self) -> None:
        try:
            self.pid_file = write_pid_file(self.proc.pid, self.spec.argv)
        except OSError as exc:  # the sweep is a second line of defence; an engine runs without it
            log.warning("cannot write the engine's pid file under %s: %s", engines_dir(), exc)

    def wait_healthy(self, timeout_s: float) -> float:
        """Poll the health endpoint; returns seconds to healthy or raises DeploymentFailed."""
        assert self.proc is not None
        t0 = time.monotonic()
        url = self.base_url + self.adapter.health_path
        with httpx.Client(timeout=2.0) as client:
            while True:
                code = self.proc.poll()
                if code is not None:
                    text = log_tail(self.log_path)
                    cls = self.adapter.classify_failure(text) or "exited_at_start"
                    raise DeploymentFailed(cls, f"engine exited with code {code} before it was healthy", text)
                try:
                    if client.get(url).status_code == 200:
                        return time.monotonic() - t0
                except httpx.TransportError:
                    pass  # not listening yet
                if time.monotonic() - t0 > timeout_s:
                    text = log_tail(self.log_path)
                    raise DeploymentFailed("health_timeout", f"{url} not healthy after {timeout_s:.0f} s", text)
                time.sleep(0.25)

    def rss_bytes(self) -> int | None:
        return rss_bytes(self.proc.pid) if self.proc is not None else None

    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL what is left after the grace period. Idempotent."""
        _LIVE.discard(self)
        if self.proc is None:
            return
        try:
            if self.proc.poll() is not None:
                return
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                log.warning("engine pid %s ignored SIGTERM for %.0f s; killing it", self.proc.pid, grace_s)
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
            except ProcessLookupError:
                pass
        finally:
            if self.pid_file is not None:
                self.pid_file.unlink(missing_ok=True)


def _alive(pid: int, started: int | None) -> bool:
    """Whether the process that had this pid and start time still runs (not a later reuse of it)."""
    return started is not None and start_time(pid) == started


def remove_leftovers(directory: Path | None = None) -> list[int]:
    """Kill process engines a bakeoff that is gone left behind (SIGKILL to the engine's process
    group), reading the pid files under `directory` (default `engines_dir()`). An engine is killed
    only if its pid still names the same process (start time and command line as recorded) and its
    owner is dead; an engine of a bakeoff still running here, or of another host, is left alone. Pid
    files of processes that are gone are removed. Returns the pids killed."""
    directory = directory or engines_dir()
    killed = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            entry = json.loads(path.read_text())
            pid, started = int(entry["pid"]), entry.get("start_time")
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("ignoring an unreadable engine pid file %s", path)
            continue
        if entry.get("host") not in (None, socket.gethostname()):
            continue
        if _alive(int(entry.get("owner_pid", 0)), entry.get("owner_start_time")):
            continue  # its bakeoff still runs and looks after it
        if _alive(pid, started) and _cmdline(pid) == entry.get("cmdline"):
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        path.unlink(missing_ok=True)
    if killed:
        log.warning("killed %d leftover engine process(es): %s", len(killed), ", ".join(map(str, killed)))
    return killed


@atexit.register
def _stop_leftovers() -> None:
    for inst in list(_LIVE):
        inst.stop(grace_s=3.0)
