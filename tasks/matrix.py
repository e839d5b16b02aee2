"""The matrix file: what to deploy and how to load it, validated into a Plan.

A matrix names engines, models, deployment groups (instances that run together), workloads and load
levels; the Plan is their product: deployment groups x bench cells. Every error names the file, the
field path and what is allowed, in one line (`MatrixError`), so the CLI can exit 2 without a traceback.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import math
import os
import re
import stat
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from tasks.errors import BadInput

ID = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


class MatrixError(BadInput, ValueError):
    """A matrix file that cannot be used; the message is one line naming file, field and rule.

    Whatever the message was built from (a key with a newline in it, a file name), it is kept to one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).splitlines()))


# Bounds on what a YAML file bakeoff reads (a matrix, a prompts file) may be, checked before and while
# parsing: the study's matrix is 5 KB and 4 levels deep, its prompts file 21 KB.
MAX_MATRIX_BYTES = 1 << 20  # 1 MiB
MAX_PROMPTS_BYTES = 8 << 20  # 8 MiB
MAX_YAML_DEPTH = 32  # nested mappings/lists; PyYAML's composer recurses, 500 levels overflow the stack
MAX_YAML_NODES = 200_000  # nodes once aliases are expanded (a "billion laughs" file is 1 KB of aliases)

# What one request's record holds in memory until the night is staged (tasks/records.RequestRecord:
# ids, timestamps, strings, about 2 KiB, plus one int in chunk_times per streamed token), and the most
# one bench cell's records may take.
RECORD_BYTES = 2048
RECORD_BYTES_PER_TOKEN = 40
MAX_CELL_RECORD_BYTES = 2 << 30  # 2 GiB


def _unique(what: str, ids: list[Any], noun: str = "ids") -> None:
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ValueError(f"{what}: {noun} must be unique, repeated: {dupes}")


class _Strict(BaseModel):
    # allow_inf_nan: .inf, -.inf and .nan are refused in every float field (a duration that never ends,
    # a rate that is not a number); every bound below is then a finite one.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Build(_Strict):
    """An image bakeoff builds (tasks/images.py). Paths are relative to the matrix file."""

    name: str  # image name; the tag is a hash of everything that goes into the build
    dockerfile: str
    args: dict[str, str] = {}
    files: dict[str, str] = {}  # name in the build context -> path here ($VARS and ~ expanded)


class CacheResetEndpoint(_Strict):
    """An external engine's prefix-cache reset, called before each cell (tasks/engines/cache.py): e.g. a
    vLLM server started with VLLM_SERVER_DEV_MODE=1, {path: /reset_prefix_cache}; SGLang's /flush_cache.
    A 2xx answer is the reset, unless it is JSON with `"success": false` (busy: asked again)."""

    method: Literal["POST", "GET"] = "POST"
    path: str  # the endpoint's path on the engine's url

    @field_validator("path")
    @classmethod
    def _a_path(cls, v: str) -> str:
        if not v.startswith("/") or "://" in v:
            raise ValueError("not a path; allowed: a path on the engine's url, starting with /")
        return v


class EngineVersion(_Strict):
    """One entry of an engine's version axis (`engines.NAME.versions`): the version, and where it differs
    from the engine's, its image, profile or args."""

    version: str = Field(min_length=1)
    image: str | None = None
    profile: str | None = None
    args: list[str] | None = None


class Engine(_Strict):
    kind: Literal["llamacpp", "vllm", "sglang", "external"]
    launcher: Literal["process", "docker", "none"] = "process"
    # process launcher: the server binary; empty means the one `make llama-server` builds and caches.
    binary: str | None = None
    image: str | None = None
    build: Build | None = None  # build the image instead of using `image`
    # Give instances the GPU (matrix `gpu.index`): containers get it as a device, a local process as
    # CUDA_VISIBLE_DEVICES. Default: the adapter's (yes for vllm/sglang, no for llamacpp).
    use_gpu: bool | None = None
    # Container networking: the host's network (the default; all CI and these machines have), or a
    # bridge network with the instance's port published on 127.0.0.1.
    network: Literal["host", "bridge"] = "host"
    # A named flag set of the adapter for a GPU that needs it (e.g. "blackwell": the study's flags).
    profile: str | None = None
    # external engines: the base URL of an OpenAI-compatible server bakeoff does not manage.
    url: str | None = None
    # For llama.cpp: the llama-cpp-python sdist version whose vendored llama.cpp is built.
    version: str = Field(default="", min_length=1)  # required unless `versions` gives an axis
    # A version axis: one configuration per entry (a version, or {version, image, profile, args}); each
    # deployment using this engine is run once per version, side by side (tasks/version_axis.py).
    versions: list[str | EngineVersion] = []
    args: list[str] = []
    env: dict[str, str] = {}
    # Secrets are referenced by env var name only; the value never enters the file or the warehouse.
    secret_env: list[str] = []
    startup_timeout_s: float = Field(default=120.0, gt=0)
    # external engines: the request fields beyond the OpenAI API the server honours (vLLM's, SGLang's and
    # llama.cpp's servers take ignore_eos). A workload setting an engine does not honour is refused, never
    # silently dropped: a reply that stops at EOS is different work from one that runs to max_tokens.
    accepts: list[Literal["ignore_eos"]] = []
    # external engines: how to empty the server's prefix cache before each cell (vllm and sglang engines
    # know theirs per version; tasks/engines/*.CACHE_RESETS). Without one a cell says `not_reset`.
    cache_reset: CacheResetEndpoint | None = None

    @field_validator("url")
    @classmethod
    def _url_is_http(cls, url: str | None) -> str | None:
        if url is None:
            return url
        allowed = "an http:// or https:// URL with a host, e.g. http://127.0.0.1:8000"
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            scheme = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
            raise ValueError(f"{scheme}; allowed: {allowed}")
        try:
            parts.port  # noqa: B018 (raises on a port that is not a number in 0-65535)
        except ValueError:
            raise ValueError(f"a port that is not a number in 0-65535; allowed: {allowed}") from None
        if not parts.hostname:
            raise ValueError(f"no host; allowed: {allowed}")
        return url

    @model_validator(mode="after")
    def _engine_is_reachable(self) -> Engine:
        if not self.version and not self.versions:
            raise ValueError("version: required field is missing (or give a version axis, versions: [...])")
        if self.kind == "external" and not self.url:
            raise ValueError("url: required for an external engine (the server's base URL)")
        if self.cache_reset is not None and self.kind != "external":
            raise ValueError(
                f"cache_reset: only for an external engine; a {self.kind} engine resets its prefix cache the "
                "way its version does (docs/engine-versions.md)"
            )
        return self


class Model(_Strict):
    # A local path (relative to the matrix file), pkg:MODULE/FILE for a model shipped inside a
    # Python package, or a model hub id (e.g. Qwen/Qwen2.5-3B-Instruct) that a GPU engine reads from
    # its mounted model cache.
    path: str = Field(min_length=1)
    served_name: str | None = None
    # Architecture, for the memory planner (weights + KV cache per token). Optional: without
    # them the planner cannot predict whether a group fits, and says so.
    params_b: float | None = Field(default=None, gt=0)  # parameters, billions
    dtype_bytes: float = Field(default=2, gt=0)  # bytes per weight (bf16/fp16: 2)
    layers: int | None = Field(default=None, gt=0)
    kv_heads: int | None = Field(default=None, gt=0)
    head_dim: int | None = Field(default=None, gt=0)
    kv_dtype_bytes: float = Field(default=2, gt=0)


class Instance(_Strict):
    id: ID | None = None
    engine: str
    model: str
    # The share of the GPU's TOTAL memory this instance may use; the planner turns it into the
    # engine's own flag (vLLM: the same fraction; SGLang: a fraction of the memory free at start).
    memory_share: float | None = Field(default=None, gt=0, le=1)
    # Or the engine's raw memory flag, passed as is (how the study set SGLang's --mem-fraction-static).
    memory_flag: float | None = Field(default=None, gt=0, le=1)
    context_length: int = Field(default=4096, gt=0)
    parallel: int = Field(default=4, ge=1, le=1024)
    port: int | None = Field(default=None, ge=1, le=65535)
    args: list[str] = []

    @model_validator(mode="after")
    def _one_memory_setting(self) -> Instance:
        if self.memory_share is not None and self.memory_flag is not None:
            raise ValueError("memory_share and memory_flag: give one, not both")
        return self


class Deployment(_Strict):
    id: ID
    instances: list[Instance] = Field(min_length=1)


class Workload(_Strict):
    id: ID
    # prompts: a prompt set x output lengths (the study's shape). shared_prefix: `groups` groups of
    # requests, each group sharing one long system prompt (what prefix caching is for). random:
    # synthetic input/output lengths drawn uniformly around a mean, seeded (vLLM's "random" dataset).
    # structured: prompts that ask for JSON, each with its JSON schema, sent with `response_format`
    # (tasks/structured.py); every ok reply is judged against its schema.
    # trace: a request trace replayed on its own timestamps (tasks/trace.py), whatever load.concurrency
    # and load.rates say: each trace workload is one open-loop cell (arrival "trace") per instance and repeat.
    # multi_turn: `sessions` chat sessions of `turns` turns (uniform from min_turns when given), each turn
    # the whole conversation so far plus a new user message of input_tokens words, think_time_s apart; the
    # load's concurrency or rate applies to sessions.
    kind: Literal["prompts", "shared_prefix", "random", "structured", "trace", "multi_turn"] = "prompts"
    # kind prompts: a built-in prompt set name (tasks/data/prompts_<name>.yaml) or a path to such a file.
    prompts: str = Field(default="study", min_length=1)
    limit_prompts: int | None = Field(default=None, ge=1)
    output_lengths: list[Annotated[int, Field(gt=0, le=32768)]] = Field(default=[32, 64, 128, 256], min_length=1)
    # kinds shared_prefix and random. Lengths are in words of a fixed vocabulary, about one token each
    # for BPE tokenizers; the server's usage.prompt_tokens in each row is the measured truth.
    num_requests: int = Field(default=64, ge=1, le=1_000_000)
    input_tokens: int = Field(default=256, ge=1, le=1_000_000)
    output_tokens: int = Field(default=64, ge=1, le=32768)
    # random: lengths uniform in [mean * (1 - range_ratio), mean * (1 + range_ratio)].
    range_ratio: float = Field(default=0.0, ge=0, lt=1)
    # shared_prefix: how many groups, and which share of each prompt is the group's common prefix.
    groups: int = Field(default=4, ge=1, le=10_000)
    shared_fraction: float = Field(default=0.75, gt=0, lt=1)
    # structured: a built-in schema set (tasks/data/schemas_<name>.yaml) or a path to such a file; what
    # the requests ask the engine for (json_schema: the schema itself; json_object: any JSON object, the
    # schema only in the prompt; none: unconstrained); and whether to add the unconstrained twin, a
    # workload `<id>-unconstrained` with the same prompts and response_format none, measured in the same
    # cells (what constraining costs in TTFT and throughput).
    schemas: str = Field(default="builtin", min_length=1)
    response_format: Literal["json_schema", "json_object", "none"] = "json_schema"
    unconstrained_twin: bool = False
    # multi_turn: sessions, turns per session, the think time between a reply and the next user message
    # (fixed, or exponential with that mean).
    sessions: int = Field(default=8, ge=1, le=100_000)
    turns: int = Field(default=4, ge=1, le=1000)
    min_turns: int | None = Field(default=None, ge=1, le=1000)
    think_time_s: float = Field(default=1.0, ge=0, le=3600)
    think_time: Literal["fixed", "exponential"] = "fixed"
    # trace: a built-in trace (tasks/data/trace_<name>.jsonl) or a path to a Mooncake JSONL or CSV file;
    # its format (auto: .csv is CSV, anything else Mooncake JSONL); the factor applied to its timestamps
    # (0.5 replays it twice as fast); the time after which no request of it is sent; the prompt tokens per
    # hash_id block (Mooncake's traces: 512; default: 16 for the built-in traces, 512 for a file).
    trace: str = Field(default="small", min_length=1)
    trace_format: Literal["auto", "mooncake", "csv"] = "auto"
    time_scale: float = Field(default=1.0, gt=0, le=1000)
    max_duration_s: float | None = Field(default=None, gt=0)
    block_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    # Any kind: cancel this share of the requests (seeded) after a delay from their send, closing the stream
    # as a client that gives up does; the delay is cancel_after_ms, or drawn around it (exponential: that
    # mean; uniform: 0 to twice it). cancel_twin adds `<id>-nocancel`, the same workload without
    # cancellations, measured right after it: whether cancellations slowed the requests that were not.
    cancel_share: float = Field(default=0.0, ge=0, le=1)
    cancel_after_ms: float = Field(default=1000.0, gt=0, le=3_600_000)
    cancel_delay: Literal["fixed", "exponential", "uniform"] = "fixed"
    cancel_twin: bool = False
    # Ask the engine to keep generating past EOS so each request produces max_tokens tokens (structured:
    # off, a reply ends when its JSON does).
    ignore_eos: bool = True
    temperature: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _fields_fit_the_kind(self) -> Workload:
        only = {
            "prompts": {"prompts", "limit_prompts", "output_lengths"},
            "shared_prefix": {"num_requests", "input_tokens", "output_tokens", "groups", "shared_fraction"},
            "random": {"num_requests", "input_tokens", "output_tokens", "range_ratio"},
            "structured": {"schemas", "response_format", "unconstrained_twin", "output_tokens"},
            "trace": {"trace", "trace_format", "time_scale", "max_duration_s", "block_tokens"},
            "multi_turn": {
                "sessions",
                "turns",
                "min_turns",
                "think_time_s",
                "think_time",
                "input_tokens",
                "output_tokens",
            },
        }
        for name in sorted(self.model_fields_set - only[self.kind]):
            kinds = [k for k, names in only.items() if name in names]
            if kinds:
                raise ValueError(f"{name}: only used by kind {' or '.join(kinds)}, this workload is kind {self.kind}")
        if self.min_turns is not None and self.min_turns > self.turns:
            raise ValueError(f"min_turns: must be at most turns ({self.min_turns} > {self.turns})")
        if self.cancel_twin and self.cancel_share == 0:
            raise ValueError("cancel_twin: this workload cancels nothing (cancel_share 0); set cancel_share")
        if self.kind == "structured":
            if self.ignore_eos and "ignore_eos" in self.model_fields_set:
                raise ValueError(
                    "ignore_eos: a structured reply ends when its JSON does (an engine told to ignore EOS keeps a "
                    "grammar-constrained reply going to max_tokens); leave it out or set it false"
                )
            self.ignore_eos = False
            if self.unconstrained_twin and self.response_format == "none":
                raise ValueError("unconstrained_twin: this workload is already unconstrained (response_format none)")
        return self

    def without_cancellations(self) -> Workload:
        """The cancel twin: the same workload, nothing cancelled."""
        return self.model_copy(
            update={
                "id": f"{self.id}{NOCANCEL_SUFFIX}",
                "cancel_share": 0.0,
                "cancel_twin": False,
                "unconstrained_twin": False,
            }
        )

    def unconstrained(self) -> Workload:
        """The unconstrained twin of a structured workload: same prompts, no response_format."""
        return self.model_copy(
            update={"id": f"{self.id}{TWIN_SUFFIX}", "response_format": "none", "unconstrained_twin": False}
        )


TWIN_SUFFIX = "-unconstrained"  # the id of a structured workload's unconstrained twin: <id>-unconstrained
NOCANCEL_SUFFIX = "-nocancel"  # the id of a workload's twin without cancellations: <id>-nocancel


Arrival = Literal["poisson", "gamma", "constant"]


class Sweep(_Strict):
    """A rate sweep, run once per instance after its ordinary cells (tasks/bench.py run_sweep): a closed
    loop at `saturation_concurrency` measures the saturation request rate (ok requests / wall time),
    then open-loop cells at `rates` rates evenly spaced from low_fraction to high_fraction of it run
    from the lowest up, stopping after the first cell whose error rate or p99 TTFT explodes."""

    saturation_concurrency: int = Field(default=16, ge=1, le=4096)
    rates: int = Field(default=5, ge=1, le=100)  # how many open-loop rates (1: high_fraction only)
    low_fraction: float = Field(default=0.1, gt=0, le=1)
    high_fraction: float = Field(default=0.9, gt=0, le=1)
    arrival: Arrival = "poisson"
    burstiness: float | None = Field(default=None, gt=0, le=1000)  # gamma only, as in load
    # The workload the sweep sends (default: the first workload).
    workload: ID | None = None
    # Stop rules, checked after each open-loop cell (that cell is kept, the higher rates are skipped):
    # more than this share of its requests failed;
    stop_error_rate: float = Field(default=0.05, ge=0, le=1)
    # its p99 TTFT is over this many times the lowest-rate cell's p50 TTFT (null: off);
    stop_ttft_factor: float | None = Field(default=10.0, gt=1)
    # its p99 TTFT is over this many milliseconds (null: off).
    stop_ttft_p99_ms: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> Sweep:
        if self.low_fraction >= self.high_fraction:
            raise ValueError(
                f"low_fraction: must be below high_fraction ({self.low_fraction:g} >= {self.high_fraction:g})"
            )
        if self.burstiness is not None and self.arrival != "gamma":
            raise ValueError(f"burstiness: only used with arrival gamma (sweep arrival is {self.arrival})")
        return self


class Load(_Strict):
    # Closed loop: one cell per level, that many requests always in flight. Default [4] without rates.
    concurrency: list[Annotated[int, Field(ge=1, le=4096)]] | None = None
    # Open loop: one cell per rate (requests/s); sends follow `arrival` on an absolute schedule.
    rates: list[Annotated[float, Field(gt=0, le=100_000)]] = []
    arrival: Arrival = "poisson"
    # gamma only: the shape k of the inter-arrival gaps; their coefficient of variation is 1/sqrt(k)
    # (k < 1 burstier than Poisson, k = 1 is Poisson, k > 1 more regular).
    burstiness: float | None = Field(default=None, gt=0, le=1000)
    # open loop: at most this many requests in flight; a send waiting for a slot keeps its
    # scheduled time, so the wait shows as queue delay.
    max_concurrency: int | None = Field(default=None, ge=1, le=65536)
    warmup_requests: int = Field(default=2, ge=0, le=100_000)
    # Per-cell limits: a request count (the workload is cycled or cut to it; default: the workload
    # once) and a duration after which no new request is sent (those in flight finish).
    requests_per_cell: int | None = Field(default=None, ge=1, le=10_000_000)
    duration_s: float | None = Field(default=None, gt=0)
    request_timeout_s: float = Field(default=300.0, gt=0)
    # A deadline for a cell's measured part: then nothing more is sent and the requests in flight are
    # cut off (status timeout). Default: the longest a cell can take whose requests keep their deadline,
    # ceil(requests / concurrency) x request_timeout_s (+ an open loop's schedule; loadgen.default_cell_timeout_s).
    cell_timeout_s: float | None = Field(default=None, gt=0)
    seed: int = 0
    # A saturation-then-rates sweep per instance, after the cells above (see Sweep).
    sweep: Sweep | None = None

    @model_validator(mode="after")
    def _levels(self) -> Load:
        if self.concurrency is None:
            self.concurrency = [] if self.rates or self.sweep else [4]
        if not self.concurrency and not self.rates and not self.sweep:
            raise ValueError("concurrency: give at least one concurrency level or one rate (or a sweep)")
        if self.burstiness is not None and self.arrival != "gamma":
            raise ValueError(f"burstiness: only used with arrival gamma (arrival is {self.arrival})")
        if self.max_concurrency is not None and not self.rates:
            raise ValueError("max_concurrency: caps open-loop rates; closed-loop levels are already a concurrency")
        _unique("concurrency", self.concurrency, "levels")
        _unique("rates", self.rates, "rates")
        return self


class Slo(_Strict):
    ttft_ms: float | None = Field(default=None, gt=0)
    tpot_ms: float | None = Field(default=None, gt=0)
    e2e_ms: float | None = Field(default=None, gt=0)


class Gpu(_Strict):
    index: int = Field(default=0, ge=0)
    name: str | None = None
    # For planning without the card: its total memory as nvidia-smi reports it (MiB), and what the
    # driver keeps back (NVML "used" on an idle card: 480 MiB on an H100 with driver 580).
    memory_total_mib: int | None = Field(default=None, gt=0)
    reserved_mib: int = Field(default=480, ge=0)
    # Per engine process outside its memory budget: CUDA context, allocator slack (an estimate).
    process_overhead_mib: int = Field(default=1024, ge=0)


class Matrix(_Strict):
    name: ID
    description: str = ""
    warehouse: str = ".bakeoff/bakeoff.duckdb"
    runs_dir: str = ".bakeoff/runs"
    engines: dict[str, Engine] = Field(min_length=1)
    models: dict[str, Model] = Field(min_length=1)
    deployments: list[Deployment] = Field(min_length=1)
    workloads: list[Workload] = Field(min_length=1)
    load: Load = Load()
    repeats: int = Field(default=1, ge=1, le=100)
    # The night ends Failed (exit 1) when more than this share of its measured requests failed, or
    # when no instance started: a night that measured (almost) nothing is not a green night.
    max_failed_share: float = Field(default=0.5, ge=0, le=1)
    slo: Slo = Slo()
    gpu: Gpu | None = None

    @property
    def gpu_index(self) -> int:
        """The GPU the night uses (`gpu.index`; the first one when the matrix names none)."""
        return self.gpu.index if self.gpu else 0

    @field_validator("engines", "models")
    @classmethod
    def _keys_are_ids(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", key):
                raise ValueError(f"name {key!r} must be letters, digits, '.', '_' or '-'")
        return value

    @model_validator(mode="after")
    def _references_resolve(self) -> Matrix:
        importlib.import_module("tasks.version_axis").expand(self)  # engines.*.versions: one engine each
        for d_i, dep in enumerate(self.deployments):
            for i_i, inst in enumerate(dep.instances):
                where = f"deployments.{d_i}.instances.{i_i}"
                if inst.engine not in self.engines:
                    raise ValueError(f"{where}.engine: {inst.engine!r} is not one of engines: {sorted(self.engines)}")
                if inst.model not in self.models:
                    raise ValueError(f"{where}.model: {inst.model!r} is not one of models: {sorted(self.models)}")
        sweep = self.load.sweep
        if sweep and sweep.workload is not None and sweep.workload not in [w.id for w in self.workloads]:
            raise ValueError(
                f"load.sweep.workload: {sweep.workload!r} is not one of workloads: {[w.id for w in self.workloads]}"
            )
        self._add_unconstrained_twins()
        _unique("deployments", [d.id for d in self.deployments])
        self._instance_ids_unique()
        self._external_engines_honour_the_workloads()
        _unique("workloads", [w.id for w in self.workloads])
        self._shares_fit_one_gpu()
        self._cells_fit_in_memory()
        return self

    def _add_unconstrained_twins(self) -> None:
        """Each structured workload with unconstrained_twin (each workload with cancel_twin) gets its twin right
        after it (so every instance
        measures both at each load shape, one after the other); a workload of that id already there is
        refused as a repeated id."""
        out: list[Workload] = []
        for w_i, w in enumerate(self.workloads):
            out.append(w)
            twins = [w.unconstrained()] if w.unconstrained_twin else []
            twins += [w.without_cancellations()] if w.cancel_twin else []
            for twin in twins:
                if len(twin.id) > 64:
                    raise ValueError(
                        f"workloads.{w_i}.id: {w.id!r} is too long for its twin's id {twin.id!r} (at most 64 characters)"
                    )
            out += twins
        self.workloads = out

    def _shares_fit_one_gpu(self) -> None:
        """The instances of a group run at once on the night's one GPU: their shares of its total memory
        (memory_share, or a raw memory_flag where the engine's flag is a share of the total, as vLLM's is)
        cannot add up to more than the whole card. SGLang's raw flag is a share of what is free at its
        start, so it is not added; the planner (tasks/gpu_memory.py) judges those."""
        # The adapters own these facts; tasks.engines imports this module, so it is imported here, at
        # call time (through importlib: mypy's strict check of this module stays within it).
        adapter_for = importlib.import_module("tasks.engines").adapter_for

        for d_i, dep in enumerate(self.deployments):
            parts: list[tuple[str, str, float]] = []
            for i_i, inst in enumerate(dep.instances):
                engine = self.engines[inst.engine]
                adapter = adapter_for(engine.kind)
                if adapter.memory_flag is None or not adapter.uses_gpu(engine):
                    continue  # no GPU memory of its own to share (llama.cpp on the CPU, an external server)
                iid = inst.id or f"{dep.id}-{i_i}"
                if inst.memory_share is not None:
                    parts.append((iid, "memory_share", inst.memory_share))
                elif inst.memory_flag is not None and adapter.memory_fraction_of == "total":
                    parts.append((iid, "memory_flag", inst.memory_flag))
            total = math.fsum(share for _, _, share in parts)
            if total > 1 + 1e-9:
                terms = " + ".join(f"{iid} {share:g}" for iid, _, share in parts)
                raise ValueError(
                    f"deployments.{d_i}: group {dep.id!r} asks for {total:g} of one GPU's memory ({terms}); the "
                    "instances of a group share the GPU, so their memory_share (and vLLM memory_flag) values must "
                    "sum to at most 1"
                )

    def _cells_fit_in_memory(self) -> None:
        """A cell's request records stay in memory until the night is staged: refuse a cell whose records
        alone would take more than MAX_CELL_RECORD_BYTES (RECORD_BYTES each, plus RECORD_BYTES_PER_TOKEN
        per streamed output token). A cell sends `load.requests_per_cell` requests, or its workload once;
        the concurrency only decides how many are in flight, not how many are kept."""
        for w_i, w in enumerate(self.workloads):
            if w.kind == "prompts":
                # its count is the prompts file's (bounded by MAX_PROMPTS_BYTES) x output lengths
                tokens, count, field = max(w.output_lengths), None, f"workloads.{w_i}"
            elif w.kind == "structured":
                # its count is the schema file's prompts (bounded like a prompts file)
                tokens, count, field = w.output_tokens, None, f"workloads.{w_i}"
            elif w.kind == "multi_turn":
                tokens, count, field = w.output_tokens, w.sessions * w.turns, f"workloads.{w_i}.sessions"
            elif w.kind == "trace":
                continue  # its count is the trace file's (bounded at 64 MiB); requests_per_cell does not apply
            else:
                tokens = math.ceil(w.output_tokens * (1 + w.range_ratio))
                count, field = w.num_requests, f"workloads.{w_i}.num_requests"
            if self.load.requests_per_cell is not None:
                count, field = self.load.requests_per_cell, "load.requests_per_cell"
            if count is None:
                continue
            per_record = RECORD_BYTES + RECORD_BYTES_PER_TOKEN * tokens
            if count * per_record > MAX_CELL_RECORD_BYTES:
                raise ValueError(
                    f"{field}: {count:,} requests per cell of workload {w.id!r} would hold about "
                    f"{count * per_record / 1e9:.1f} GB of request records in memory ({RECORD_BYTES} B each + "
                    f"{RECORD_BYTES_PER_TOKEN} B per output token, up to {tokens}); at most "
                    f"{MAX_CELL_RECORD_BYTES >> 30} GiB per cell: at most {MAX_CELL_RECORD_BYTES // per_record:,} "
                    "requests here"
                )

    def _external_engines_honour_the_workloads(self) -> None:
        used = {inst.engine for dep in self.deployments for inst in dep.instances}
        for name in sorted(used):
            engine = self.engines[name]
            if engine.kind != "external" or "ignore_eos" in engine.accepts:
                continue
            for w_i, w in enumerate(self.workloads):
                if w.ignore_eos:
                    raise ValueError(
                        f"workloads.{w_i}.ignore_eos: workload {w.id!r} asks for ignore_eos, which external engine "
                        f"{name!r} does not say it honours: add `accepts: [ignore_eos]` to engines.{name} if the "
                        "server takes it (vLLM, SGLang and llama.cpp do), or set ignore_eos: false"
                    )

    def _instance_ids_unique(self) -> None:
        """Instance ids (explicit, or the generated `<deployment>-<index>`) name rows, cells and
        handles across the whole night: two alike would overwrite each other."""
        seen: dict[str, str] = {}
        for d_i, dep in enumerate(self.deployments):
            for i_i, inst in enumerate(dep.instances):
                iid, where = inst.id or f"{dep.id}-{i_i}", f"deployments.{d_i}.instances.{i_i}"
                if iid in seen:
                    field = f"{where}.id" if inst.id else where
                    what = "id" if inst.id else "generated id"
                    raise ValueError(
                        f"{field}: instance {what} {iid!r} is already the id of {seen[iid]}; "
                        "instance ids must be unique across all deployments"
                    )
                seen[iid] = f"{where}" + ("" if inst.id else f" (generated: {dep.id}-{i_i})")


# ---------------------------------------------------------------- reading YAML files


class _Refused(Exception):
    """Raised inside the YAML loader: the file is refused; the message is one line without the path."""


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing what it would otherwise accept or die on: a key repeated in one
    mapping (PyYAML keeps the last silently), nesting deeper than MAX_YAML_DEPTH (its composer recurses:
    500 levels are a RecursionError), and aliases that expand past `max_nodes` nodes or refer to
    themselves (a "billion laughs" file)."""

    max_nodes = MAX_YAML_NODES

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.MappingStartEvent, yaml.SequenceStartEvent) and self._depth >= MAX_YAML_DEPTH:
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise _Refused(
                f"line {mark.line + 1} column {mark.column + 1}: nested deeper than {MAX_YAML_DEPTH} levels "
                f"of mappings and lists (at most {MAX_YAML_DEPTH})"
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults` merges; its keys may be overridden, that is what it is for
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise _Refused(
                    f"line {line}: key {key!r} appears twice in one mapping (first on line {seen[key]}); "
                    "YAML would keep only the last: give each key once"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _expanded(node: yaml.Node, depth: int, memo: dict[int, tuple[int, int]], open_: set[int], limit: int) -> int:
    """How many nodes `node` stands for once its aliases are expanded (memoised per node, so a billion
    laughs is counted, never built), refusing a self-reference, a total above `limit`, and a depth
    (aliases included) above MAX_YAML_DEPTH; returns the node's height."""
    key = id(node)
    if key in memo:
        size, height = memo[key]
    else:
        if key in open_:
            raise _Refused(f"line {node.start_mark.line + 1}: an alias refers to the node that contains it")
        open_.add(key)
        size, height = 1, 0
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        for child in children:
            height = max(height, 1 + _expanded(child, depth + 1, memo, open_, limit))
            size += memo[id(child)][0]
            if size > limit:
                raise _Refused(
                    f"line {node.start_mark.line + 1}: aliases expand to more than {limit:,} nodes "
                    f"(at most {limit:,}; a 'billion laughs' file)"
                )
        open_.discard(key)
        memo[key] = (size, height)
    if depth + height > MAX_YAML_DEPTH:
        raise _Refused(
            f"line {node.start_mark.line + 1}: aliases nest deeper than {MAX_YAML_DEPTH} levels (at most {MAX_YAML_DEPTH})"
        )
    return height


def _read_bounded(path: Path, what: str, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most `max_bytes`, checked before it is read."""
    try:
        st = path.stat()
    except (OSError, ValueError) as exc:
        raise MatrixError(f"{path}: cannot read the {what} ({getattr(exc, 'strerror', None) or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise MatrixError(f"{path}: is a directory; the {what} must be a YAML file")
    if not stat.S_ISREG(st.st_mode):
        raise MatrixError(f"{path}: not a regular file (a device, FIFO or socket); the {what} must be a YAML file")
    if st.st_size > max_bytes:
        raise MatrixError(
            f"{path}: {st.st_size:,} bytes, larger than a {what} may be (at most {max_bytes:,} bytes, "
            f"{max_bytes >> 20} MiB)"
        )
    try:
        with path.open("rb") as f:
            raw = f.read(max_bytes + 1)
    except OSError as exc:
        raise MatrixError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    if len(raw) > max_bytes:  # it grew since the stat
        raise MatrixError(f"{path}: larger than a {what} may be (at most {max_bytes:,} bytes)")
    return raw


DATA_DIR = Path(__file__).parent / "data"  # the built-in prompt sets, schema sets and traces


def builtin_or_file(
    name_or_path: str,
    base_dir: Path | None,
    *,
    prefix: str,
    exts: tuple[str, ...],
    field: str,
    what: str,
    must_be_file: bool = False,
) -> Path:
    """A built-in data file by name (tasks/data/PREFIX_NAME.EXT) or a path relative to the matrix file;
    MatrixError naming the field and the built-in names when it is neither."""
    for ext in exts:
        builtin = DATA_DIR / f"{prefix}_{name_or_path}.{ext}"
        if builtin.is_file():
            return builtin
    path = Path(name_or_path)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    try:
        found = path.is_file() if must_be_file else path.exists()
    except OSError:  # a name too long for the file system, say
        found = False
    if not found:
        known = sorted({p.stem.removeprefix(f"{prefix}_") for ext in exts for p in DATA_DIR.glob(f"{prefix}_*.{ext}")})
        raise MatrixError(f"workloads.{field}: {name_or_path!r} is neither a built-in {what} {known} nor a file")
    return path


def read_yaml(
    path: str | os.PathLike[str], what: str, *, max_bytes: int = MAX_MATRIX_BYTES, max_nodes: int = MAX_YAML_NODES
) -> tuple[Any, bytes]:
    """A YAML file bakeoff reads (a matrix, a prompts file) parsed into plain data, with its bytes.
    Anything wrong with it is one MatrixError line naming the file (and the line where there is one)
    and what is allowed: unreadable, a directory, too large, not UTF-8 text, not YAML, a repeated key,
    too deep, aliases that expand too far, a number Python cannot hold."""
    path = Path(path)
    raw = _read_bounded(path, what, max_bytes)
    if b"\x00" in raw:
        raise MatrixError(f"{path}: a binary file (it holds NUL bytes); the {what} must be UTF-8 YAML text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise MatrixError(
            f"{path}: line {line}: byte 0x{raw[exc.start]:02x} is not UTF-8 (Latin-1 or another encoding?); "
            f"the {what} must be UTF-8 text"
        ) from None
    loader = _BoundedLoader(text.removeprefix("\ufeff"))
    loader.max_nodes = max_nodes
    try:
        node = loader.get_single_node()
        if node is None:
            return None, raw
        _expanded(node, 0, {}, set(), max_nodes)
        return loader.construct_document(node), raw
    except _Refused as exc:
        raise MatrixError(f"{path}: {exc}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where, column = (f" line {mark.line + 1}:", f"column {mark.column + 1}: ") if mark else ("", "")
        problem = exc.problem or exc.context or "invalid YAML"
        raise MatrixError(f"{path}:{where} not valid YAML ({column}{problem})") from None
    except yaml.YAMLError as exc:
        raise MatrixError(f"{path}: not valid YAML ({exc})") from None
    except (ValueError, OverflowError) as exc:  # a scalar PyYAML parses but Python cannot hold
        raise MatrixError(f"{path}: a value cannot be read ({str(exc).splitlines()[0][:200]})") from None
    finally:
        loader.dispose()


# ---------------------------------------------------------------- validation messages

MAX_ERRORS_SHOWN = 20  # more than this many problems: the rest are counted


def _unwrap(tp: Any) -> Any:
    """The type inside Annotated[...] and X | None."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model class whose fields are at `loc` (a pydantic error location), if it is one."""
    tp: Any = Matrix
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(str(part))
            if field is None:
                return None
            tp = field.annotation
        elif typing.get_origin(tp) in (list, dict):
            tp = typing.get_args(tp)[-1]  # the item: an index or a key was this part
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _path(loc: tuple[int | str, ...]) -> str:
    simple = re.compile(r"[A-Za-z0-9_.-]+")
    return ".".join(str(p) if simple.fullmatch(str(p)) else repr(p) for p in loc) or "(top level)"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _describe(err: ErrorDetails) -> str:
    path = _path(err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if not err["loc"] and err["type"] == "value_error":
        return msg  # a Matrix-wide rule: its message starts with the field path itself
    if err["type"] == "extra_forbidden":
        model = _model_at(err["loc"][:-1])
        if model is None:
            return f"{path}: unknown field"
        names = list(model.model_fields)
        close = difflib.get_close_matches(str(err["loc"][-1]), names, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"allowed: {', '.join(names)}"
        return f"{path}: unknown field; {hint}"
    if err["type"] == "missing":
        return f"{path}: required field is missing"
    if err["type"] == "literal_error":
        return f"{path}: {_short(err.get('input'))} is not allowed; {msg[0].lower()}{msg[1:]}"
    if "input" in err and not isinstance(err["input"], (dict, list)):
        return f"{path}: {msg} (got {_short(err['input'])})"
    return f"{path}: {msg}"


def _all_errors(exc: ValidationError) -> str:
    """Every problem, the first one first (the line reads on its own up to the first ';')."""
    described = list(dict.fromkeys(_describe(e) for e in exc.errors(include_url=False)))
    shown = described[:MAX_ERRORS_SHOWN]
    more = f"; and {len(described) - len(shown)} more" if len(described) > len(shown) else ""
    return "; ".join(shown) + more


def load_matrix(path: str | os.PathLike[str]) -> tuple[Matrix, str]:
    """Parse and validate a matrix file; returns it with the sha256 of its bytes."""
    path = Path(path)
    data, raw = read_yaml(path, "matrix file")
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise MatrixError(
            f"{path}: the matrix must be a YAML mapping with engines, models, deployments, workloads (got {got})"
        )
    try:
        matrix = Matrix.model_validate(data)
    except ValidationError as exc:
        raise MatrixError(f"{path}: {_all_errors(exc)}") from None
    return matrix, hashlib.sha256(raw).hexdigest()
