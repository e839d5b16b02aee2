"""The small interface every engine adapter implements: how to start it, how to tell it is up,
what to add to each request, and how to read its log when it fails."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from tasks.matrix import Engine, Instance, Workload


@dataclass(frozen=True)
class LaunchSpec:
    argv: list[str]
    env: dict[str, str]
    port: int


class EngineAdapter:
    kind: ClassVar[str]
    health_path: ClassVar[str] = "/health"
    metrics_path: ClassVar[str | None] = "/metrics"
    # (failure class, regex over the server log), first match wins; quoted from the engine's source.
    failure_patterns: ClassVar[list[tuple[str, str]]] = []

    # The engine's GPU memory flag, set by the planner (tasks/gpu_memory.py), and what its value is a
    # fraction of: "total" memory (vLLM) or the memory "free_at_start" (SGLang).
    memory_flag: ClassVar[str | None] = None
    memory_fraction_of: ClassVar[str | None] = None
    gpu_by_default: ClassVar[bool] = False  # whether an instance gets the GPU unless `use_gpu` says
    # The engine's upstream image, for `bakeoff compose` of an engine the matrix runs as a process (or names
    # no image for): "{version}" is the matrix's engine version. None: compose needs `image` or `build`.
    upstream_image: ClassVar[str | None] = None
    # Where the running server says what it is (GET, JSON), and the field that holds it: what a deployment
    # row records beside the matrix's version, so an upgrade that did not happen (or one that did) shows.
    version_path: ClassVar[str | None] = None
    version_field: ClassVar[str] = "version"

    def compose_image(self, engine: Engine) -> str | None:
        if self.upstream_image is None:
            return None
        return self.upstream_image.format(version=engine.version)

    def uses_gpu(self, engine: Engine) -> bool:
        """Whether an instance of this engine gets the matrix's GPU (`engines.*.use_gpu` decides when set)."""
        return self.gpu_by_default if engine.use_gpu is None else engine.use_gpu

    def launch_spec(
        self,
        engine: Engine,
        inst: Instance,
        model_path: Path | str,
        served_name: str,
        port: int,
        memory_args: list[str] = (),
    ) -> LaunchSpec:
        """The server's command line. `memory_args` come from the planner (tasks/gpu_memory.py)."""
        raise NotImplementedError

    def request_extras(self, workload: Workload, engine: Engine | None = None) -> dict:
        """Fields added to every request body. llama-server, vLLM and SGLang all take `ignore_eos`
        (keep generating to max_tokens, so output lengths are what the workload asked for)."""
        return {"ignore_eos": True} if workload.ignore_eos else {}

    def version(self, engine: Engine) -> str:
        return engine.version

    def reported_version(self, payload: object) -> str | None:
        """The version from the server's version_path answer, None when it says none."""
        value = payload.get(self.version_field) if isinstance(payload, dict) else None
        return str(value) if value not in (None, "") else None

    def classify_failure(self, log_text: str) -> str | None:
        for failure_class, pattern in self.failure_patterns:
            if re.search(pattern, log_text, re.IGNORECASE | re.MULTILINE):
                return failure_class
        return None
