"""The matrix file: what to deploy and how to load it, validated into a Plan.

A matrix names engines, models, deployment groups (instances that run together), workloads and load
levels; the Plan is their product: deployment groups x bench cells. Every error names the file, the
field path and what is allowed, in one line (`MatrixError`), so the CLI can exit 2 without a traceback.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ID = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


class MatrixError(ValueError):
    """A matrix file that cannot be used; the message is one line naming file, field and rule."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Engine(_Strict):
    kind: Literal["llamacpp", "vllm", "sglang", "external"]
    launcher: Literal["process", "docker", "none"] = "process"
    # process launcher: the server binary; empty means the one `make llama-server` builds and caches.
    binary: str | None = None
    image: str | None = None
    # external engines: the base URL of an OpenAI-compatible server bakeoff does not manage.
    url: str | None = None
    # For llama.cpp: the llama-cpp-python sdist version whose vendored llama.cpp is built.
    version: str
    args: list[str] = []
    env: dict[str, str] = {}
    # Secrets are referenced by env var name only; the value never enters the file or the warehouse.
    secret_env: list[str] = []
    startup_timeout_s: float = Field(default=120.0, gt=0)

    @model_validator(mode="after")
    def _engine_is_reachable(self) -> "Engine":
        if self.kind == "external" and not self.url:
            raise ValueError("url: required for an external engine (the server's base URL)")
        return self


class Model(_Strict):
    # A local path, or pkg:DISTRIBUTION_MODULE/FILE for a model shipped inside a Python package.
    path: str
    served_name: str | None = None


class Instance(_Strict):
    id: ID | None = None
    engine: str
    model: str
    memory_share: float | None = Field(default=None, gt=0, le=1)
    context_length: int = Field(default=4096, gt=0)
    parallel: int = Field(default=4, ge=1, le=1024)
    port: int | None = Field(default=None, ge=1, le=65535)
    args: list[str] = []


class Deployment(_Strict):
    id: ID
    instances: list[Instance] = Field(min_length=1)


class Workload(_Strict):
    id: ID
    # A built-in prompt set name (tasks/data/prompts_<name>.yaml) or a path to such a file.
    prompts: str = "study"
    limit_prompts: int | None = Field(default=None, ge=1)
    output_lengths: list[Annotated[int, Field(gt=0, le=32768)]] = Field(
        default=[32, 64, 128, 256], min_length=1
    )
    # Ask the engine to keep generating past EOS so each request produces max_tokens tokens.
    ignore_eos: bool = True
    temperature: float = Field(default=0.0, ge=0)


class Load(_Strict):
    concurrency: list[Annotated[int, Field(ge=1, le=4096)]] = Field(default=[4], min_length=1)
    warmup_requests: int = Field(default=2, ge=0)
    request_timeout_s: float = Field(default=300.0, gt=0)
    seed: int = 0


class Slo(_Strict):
    ttft_ms: float | None = Field(default=None, gt=0)
    tpot_ms: float | None = Field(default=None, gt=0)
    e2e_ms: float | None = Field(default=None, gt=0)


class Gpu(_Strict):
    index: int = Field(default=0, ge=0)
    name: str | None = None


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

    @field_validator("engines", "models")
    @classmethod
    def _keys_are_ids(cls, value: dict) -> dict:
        for key in value:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", key):
                raise ValueError(f"name {key!r} must be letters, digits, '.', '_' or '-'")
        return value

    @model_validator(mode="after")
    def _references_resolve(self) -> "Matrix":
        for d_i, dep in enumerate(self.deployments):
            for i_i, inst in enumerate(dep.instances):
                where = f"deployments.{d_i}.instances.{i_i}"
                if inst.engine not in self.engines:
                    raise ValueError(f"{where}.engine: {inst.engine!r} is not one of engines: {sorted(self.engines)}")
                if inst.model not in self.models:
                    raise ValueError(f"{where}.model: {inst.model!r} is not one of models: {sorted(self.models)}")
        _unique("deployments", [d.id for d in self.deployments])
        _unique("workloads", [w.id for w in self.workloads])
        return self


def _unique(what: str, ids: list[str]) -> None:
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ValueError(f"{what}: ids must be unique, repeated: {dupes}")


def _describe(err: dict) -> str:
    path = ".".join(str(p) for p in err["loc"]) or "(top level)"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return f"{path}: unknown field (check its spelling against the matrix reference in README)"
    if err["type"] == "missing":
        return f"{path}: required field is missing"
    if err["type"] == "literal_error":
        return f"{path}: {err.get('input')!r} is not allowed; {msg[0].lower()}{msg[1:]}"
    if "input" in err and not isinstance(err["input"], (dict, list)):
        return f"{path}: {msg} (got {err['input']!r})"
    return f"{path}: {msg}"


def load_matrix(path: str | os.PathLike) -> tuple[Matrix, str]:
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


# ---------------------------------------------------------------- the plan


@dataclass(frozen=True)
class PlannedInstance:
    instance_id: str
    deployment_id: str
    engine_name: str
    model_name: str
    spec: Instance


@dataclass(frozen=True)
class Cell:
    cell_id: str
    deployment_id: str
    instance_id: str
    workload_id: str
    concurrency: int
    repeat: int


@dataclass(frozen=True)
class Group:
    deployment_id: str
    instances: tuple[PlannedInstance, ...]
    cells: tuple[Cell, ...]


def plan(matrix: Matrix) -> list[Group]:
    """Deployment groups x bench cells. Every instance of a group is benchmarked with every cell."""
    groups = []
    for dep in matrix.deployments:
        instances = tuple(
            PlannedInstance(
                instance_id=inst.id or f"{dep.id}-{i}",
                deployment_id=dep.id,
                engine_name=inst.engine,
                model_name=inst.model,
                spec=inst,
            )
            for i, inst in enumerate(dep.instances)
        )
        cells = tuple(
            Cell(
                cell_id=f"{inst.instance_id}.{w.id}.c{c}.r{r}",
                deployment_id=dep.id,
                instance_id=inst.instance_id,
                workload_id=w.id,
                concurrency=c,
                repeat=r,
            )
            for inst, w, c, r in itertools.product(
                instances, matrix.workloads, matrix.load.concurrency, range(matrix.repeats)
            )
        )
        groups.append(Group(dep.id, instances, cells))
    return groups
