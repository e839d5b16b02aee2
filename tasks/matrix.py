"""The matrix file: what to deploy and how to load it, validated into a Plan.

A matrix names engines, models, deployment groups (instances that run together), workloads and load
levels; the Plan is their product: deployment groups x bench cells. Every error names the file, the
field path and what is allowed, in one line (`MatrixError`), so the CLI can exit 2 without a traceback.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from tasks.errors import BadInput

ID = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


class MatrixError(BadInput, ValueError):
    """A matrix file that cannot be used; the message is one line naming file, field and rule."""


def _unique(what: str, ids: list[Any], noun: str = "ids") -> None:
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ValueError(f"{what}: {noun} must be unique, repeated: {dupes}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Build(_Strict):
    """An image bakeoff builds (tasks/images.py). Paths are relative to the matrix file."""

    name: str  # image name; the tag is a hash of everything that goes into the build
    dockerfile: str
    args: dict[str, str] = {}
    files: dict[str, str] = {}  # name in the build context -> path here ($VARS and ~ expanded)


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
    version: str
    args: list[str] = []
    env: dict[str, str] = {}
    # Secrets are referenced by env var name only; the value never enters the file or the warehouse.
    secret_env: list[str] = []
    startup_timeout_s: float = Field(default=120.0, gt=0)
    # external engines: the request fields beyond the OpenAI API the server honours (vLLM's, SGLang's and
    # llama.cpp's servers take ignore_eos). A workload setting an engine does not honour is refused, never
    # silently dropped: a reply that stops at EOS is different work from one that runs to max_tokens.
    accepts: list[Literal["ignore_eos"]] = []

    @model_validator(mode="after")
    def _engine_is_reachable(self) -> Engine:
        if self.kind == "external" and not self.url:
            raise ValueError("url: required for an external engine (the server's base URL)")
        return self


class Model(_Strict):
    # A local path (relative to the matrix file), pkg:MODULE/FILE for a model shipped inside a
    # Python package, or a model hub id (e.g. Qwen/Qwen2.5-3B-Instruct) that a GPU engine reads from
    # its mounted model cache.
    path: str
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
    kind: Literal["prompts", "shared_prefix", "random"] = "prompts"
    # kind prompts: a built-in prompt set name (tasks/data/prompts_<name>.yaml) or a path to such a file.
    prompts: str = "study"
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
    # Ask the engine to keep generating past EOS so each request produces max_tokens tokens.
    ignore_eos: bool = True
    temperature: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _fields_fit_the_kind(self) -> Workload:
        only = {
            "prompts": {"prompts", "limit_prompts", "output_lengths"},
            "shared_prefix": {"num_requests", "input_tokens", "output_tokens", "groups", "shared_fraction"},
            "random": {"num_requests", "input_tokens", "output_tokens", "range_ratio"},
        }
        for name in sorted(self.model_fields_set - only[self.kind]):
            kinds = [k for k, names in only.items() if name in names]
            if kinds:
                raise ValueError(f"{name}: only used by kind {' or '.join(kinds)}, this workload is kind {self.kind}")
        return self


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
    warmup_requests: int = Field(default=2, ge=0)
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
        _unique("deployments", [d.id for d in self.deployments])
        self._instance_ids_unique()
        self._external_engines_honour_the_workloads()
        _unique("workloads", [w.id for w in self.workloads])
        return self

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


def _describe(err: ErrorDetails) -> str:
    path = ".".join(str(p) for p in err["loc"]) or "(top level)"
    msg = err["msg"].removeprefix("Value error, ")
    if not err["loc"] and err["type"] == "value_error":
        return msg  # a Matrix-wide rule: its message starts with the field path itself
    if err["type"] == "extra_forbidden":
        return f"{path}: unknown field (check its spelling against the matrix reference in README)"
    if err["type"] == "missing":
        return f"{path}: required field is missing"
    if err["type"] == "literal_error":
        return f"{path}: {err.get('input')!r} is not allowed; {msg[0].lower()}{msg[1:]}"
    if "input" in err and not isinstance(err["input"], (dict, list)):
        return f"{path}: {msg} (got {err['input']!r})"
    return f"{path}: {msg}"


def load_matrix(path: str | os.PathLike[str]) -> tuple[Matrix, str]:
    """Parse and validate a matrix file; returns it with the sha256 of its bytes."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise MatrixError(f"{path}: cannot read the matrix file ({exc.strerror})") from None
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise MatrixError(f"{path}:{where}: not valid YAML ({problem})") from None
    if not isinstance(data, dict):
        raise MatrixError(f"{path}: the matrix must be a YAML mapping with engines, models, deployments, workloads")
    try:
        matrix = Matrix.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise MatrixError(f"{path}: {_describe(errors[0])}{more}") from None
    return matrix, hashlib.sha256(raw).hexdigest()
