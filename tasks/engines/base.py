"""The small interface every engine adapter implements: how to start it, how to tell it is up,
what to add to each request, and how to read its log when it fails."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, TypeVar

from tasks.matrix import Engine, Instance, Workload

T = TypeVar("T")


@dataclass(frozen=True)
class CacheReset:
    """How to empty an engine version's prefix cache between cells (read from its server's source)."""

    method: str
    path: str
    # environment the server must be started with for the endpoint to exist (vLLM: dev mode)
    needs_env: dict[str, str] = field(default_factory=dict)
    # what the answer says: "status" (a 200 is the reset) or "json-success" ({"success": bool}; false
    # while blocks are held by running requests: retry)
    answer: str = "status"


@dataclass(frozen=True)
class ProfileReview:
    """Which of a profile's workarounds an engine version still needs, and how that is known."""

    needed: tuple[str, ...]  # the profile's flags this version still needs
    not_needed: tuple[str, ...]  # the ones it no longer needs
    basis: str  # "measured" (the study ran it) or "source" (read from the release; to be measured)
    evidence: str


def since(table: Sequence[tuple[str, T]], version: str) -> T | None:
    """The value of the newest entry at or below `version` in a (since version, value) table."""
    from tasks.engines.flags import version_key

    found = None
    for start, value in sorted(table, key=lambda e: version_key(e[0])):
        if version_key(start) <= version_key(version):
            found = value
    return found


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
    # Per version, as (first version it holds for, value) tables read from each release's source: how
    # to reset the prefix cache (None: no endpoint), and the /metrics names of what bakeoff reads
    # (a concept -> the exposed sample name; counters with their _total).
    cache_resets: ClassVar[list[tuple[str, CacheReset | None]]] = []
    metric_names_by_version: ClassVar[list[tuple[str, dict[str, str]]]] = []
    # profile -> version -> which of its flags that version still needs (tasks/engines/*.PROFILES)
    profile_reviews: ClassVar[dict[str, dict[str, ProfileReview]]] = {}

    def cache_reset(self, version: str) -> CacheReset | None:
        return since(self.cache_resets, version)

    def cache_reset_for(self, engine: Engine) -> CacheReset | None:
        """How to empty this engine's prefix cache between cells (None: no way bakeoff knows)."""
        return self.cache_reset(engine.version)

    def metric_names(self, version: str) -> dict[str, str]:
        return since(self.metric_names_by_version, version) or {}

    def profile_review(self, profile: str, version: str) -> ProfileReview | None:
        return self.profile_reviews.get(profile, {}).get(version)

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
