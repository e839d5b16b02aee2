"""Run an engine instance as a container with the docker SDK: start, health-wait with a live log
tail, classify a failure from the container log, tear down always.

Containers are labelled as bakeoff's (with run and instance ids), so a later run removes what a
crashed one left behind (`remove_leftovers`).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tasks.engines import EngineAdapter, LaunchSpec
from tasks.launch import masked
from tasks.launchers.process import DeploymentFailed

log = logging.getLogger("bakeoff.docker")

LABEL = "bakeoff.managed"
# Which process started a container: a later run removes only containers whose owner is gone.
OWNER_HOST, OWNER_PID = "bakeoff.owner_host", "bakeoff.owner_pid"
_LIVE: set[DockerInstance] = set()


class DockerApiError(RuntimeError):
    """The Docker daemon did not answer a question about a container (its message says why)."""


@dataclass(eq=False)
class DockerInstance:
    client: object  # docker.DockerClient
    adapter: EngineAdapter
    spec: LaunchSpec
    image: str
    name: str
    log_path: Path
    labels: dict[str, str] = field(default_factory=dict)
    gpu_index: int | None = None  # None: no GPU (CPU engine)
    volumes: dict[str, dict] = field(default_factory=dict)
    network: str = "host"  # or "bridge": the port is published on 127.0.0.1 (CI has host networking only)
    shm_size: str = "8g"
    container: object | None = None
    _log_lines_seen: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.spec.port}"

    def start(self) -> None:
        from docker.types import DeviceRequest

        devices = (
            [DeviceRequest(device_ids=[str(self.gpu_index)], capabilities=[["gpu"]])]
            if self.gpu_index is not None
            else None
        )
        log.info("starting container %s from %s: %s", self.name, self.image, " ".join(masked(self.spec.argv)))
        self.container = self.client.containers.run(
            self.image,
            command=self.spec.argv,
            name=self.name,
            detach=True,
            labels={LABEL: "true", OWNER_HOST: socket.gethostname(), OWNER_PID: str(os.getpid()), **self.labels},
            environment=self.spec.env,
            network_mode=self.network if self.network == "host" else None,
            network=self.network if self.network != "host" else None,
            ports={f"{self.spec.port}/tcp": ("127.0.0.1", self.spec.port)} if self.network != "host" else None,
            ipc_mode="host" if self.gpu_index is not None else None,  # NCCL/torch shared memory
            shm_size=None if self.gpu_index is not None else self.shm_size,
            device_requests=devices,
            volumes=self.volumes,
        )
        _LIVE.add(self)

    def _logs(self) -> str:
        try:
            return self.container.logs(stdout=True, stderr=True).decode("utf-8", "replace")
        except Exception:  # container already removed
            return ""

    def _tail_to_log(self, text: str) -> None:
        """Live tail: new container log lines go to the bakeoff log (and the Prefect run log)."""
        lines = text.splitlines()
        for line in lines[self._log_lines_seen :]:
            if line.strip():
                log.info("%s | %s", self.name, line[:300])
        self._log_lines_seen = len(lines)

    def wait_healthy(self, timeout_s: float) -> float:
        t0 = time.monotonic()
        url = self.base_url + self.adapter.health_path
        with httpx.Client(timeout=2.0) as client:
            while True:
                self.container.reload()
                text = self._logs()
                self._tail_to_log(text)
                if self.container.status in ("exited", "dead"):
                    self.save_log()
                    code = self.container.attrs.get("State", {}).get("ExitCode")
                    cls = self.adapter.classify_failure(text) or "exited_at_start"
                    raise DeploymentFailed(
                        cls,
                        f"container exited with code {code} before it was healthy",
                        "\n".join(text.splitlines()[-40:]),
                    )
                try:
                    if client.get(url).status_code == 200:
                        return time.monotonic() - t0
                except httpx.TransportError:
                    pass
                if time.monotonic() - t0 > timeout_s:
                    self.save_log()
                    raise DeploymentFailed(
                        "health_timeout",
                        f"{url} not healthy after {timeout_s:.0f} s",
                        "\n".join(text.splitlines()[-40:]),
                    )
                time.sleep(0.5)

    def pid(self) -> int | None:
        try:
            self.container.reload()
            return self.container.attrs["State"]["Pid"] or None
        except Exception:
            return None

    def is_running(self) -> bool:
        """Whether the container runs; a removed or exited one does not. Raises DockerApiError when
        the daemon does not say (gone, timed out): not knowing is not "the engine exited"."""
        import docker.errors

        try:
            self.container.reload()
        except docker.errors.NotFound:
            return False
        except Exception as exc:
            text = str(exc).strip().splitlines()
            raise DockerApiError(f"{type(exc).__name__}: {text[0][:300] if text else 'no message'}") from exc
        return self.container.status == "running"

    def rss_bytes(self) -> int | None:
        try:
            stats = self.container.stats(stream=False)
            return int(stats["memory_stats"]["usage"])
        except Exception:
            return None

    def save_log(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.write_text(self._logs())

    def stop(self, grace_s: float = 10.0) -> None:
        """Stop and remove; idempotent, and keeps the container's log on disk first."""
        _LIVE.discard(self)
        if self.container is None:
            return
        # Teardown must not fail: a container that is already gone, or a daemon that is, is left as is.
        with contextlib.suppress(Exception):
            self.save_log()
            self.container.stop(timeout=int(grace_s))
        with contextlib.suppress(Exception):
            self.container.remove(force=True)
        self.container = None


def _owner_alive(labels: dict) -> bool:
    if labels.get(OWNER_HOST) != socket.gethostname():
        return False  # started from another host (or an old label): nobody here looks after it
    try:
        os.kill(int(labels.get(OWNER_PID, "0")), 0)
        return True
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True  # alive, another user's


def remove_leftovers(client) -> list[str]:
    """Remove bakeoff containers left behind by a run that crashed (their owner process is gone);
    a container of a bakeoff still running on this host is left alone. Returns the names removed."""
    removed = []
    for container in client.containers.list(all=True, filters={"label": f"{LABEL}=true"}):
        if _owner_alive(container.labels):
            continue
        container.remove(force=True)
        removed.append(container.name)
    if removed:
        log.warning("removed %d leftover bakeoff container(s): %s", len(removed), ", ".join(removed))
    return removed


@atexit.register
def _stop_leftovers() -> None:
    for inst in list(_LIVE):
        inst.stop(grace_s=3.0)
