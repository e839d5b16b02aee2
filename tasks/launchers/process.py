"""Run an engine as a local process: start, wait until healthy, tear down (always).

The process gets its own process group so teardown reaches anything it spawned; every live
instance is also registered for an atexit sweep, so even an unexpected exit of bakeoff leaks nothing.
"""

from __future__ import annotations

import atexit
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
from tasks.telemetry import rss_bytes

log = logging.getLogger("bakeoff.launcher")

_LIVE: set[ProcessInstance] = set()


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


@dataclass(eq=False)
class ProcessInstance:
    adapter: EngineAdapter
    spec: LaunchSpec
    log_path: Path
    proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.spec.port}"

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log.info("starting %s", " ".join(self.spec.argv))
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(
                self.spec.argv,
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.spec.env},
                start_new_session=True,
            )
        _LIVE.add(self)

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
        if self.proc is None or self.proc.poll() is not None:
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


@atexit.register
def _stop_leftovers() -> None:
    for inst in list(_LIVE):
        inst.stop(grace_s=3.0)
