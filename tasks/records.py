"""The row contracts of the tables a night writes: `RequestRecord` (one row per request, nothing
derived, as the raw record contract says), `DeploymentRow` and `CellRow`. They are the one place the
columns are named: the validation gate derives its column lists from them, and
tests/test_row_contracts.py holds them equal to the live warehouse schema (names, types, nullability).

RequestRecord:

Timestamps are integer nanoseconds of `time.monotonic_ns()` relative to the start of the cell
(`cell_started_ns`), so they are exact, comparable within a cell, and never jump with the wall clock.
The cell's wall-clock start is kept beside them (`cell_started_at`) to place the cell in time.
`chunk_times` holds the offset of every *content* chunk (non-empty delta), same clock and unit.
Token counts are what the server reported in `usage`; None means the server sent no usage, never a
guess from `max_tokens`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa

STATUSES = ("ok", "http_error", "timeout", "disconnected", "bad_stream", "cancelled")
# error_class of a request its workload cancelled on purpose (cancel_share): the workload, never a failure
CLIENT_CANCEL = "client_cancel"
# cells.cache_state: what the engine's prefix cache held as the cell began (tasks/engines/cache.py)
CACHE_STATES = ("reset", "not_cached", "reset_failed", "not_reset")


@dataclass(slots=True)
class RequestRecord:
    run_id: str
    cell_id: str
    request_id: str
    prompt_id: str
    engine: str
    model: str
    deployment_id: str
    instance_id: str
    max_tokens: int
    cell_started_at: datetime  # wall clock, UTC
    scheduled_at: int  # ns from cell start: when the load shape wanted the request sent
    sent_at: int | None = None  # just before the request left the client
    first_chunk_at: int | None = None  # first SSE event of any kind (role, empty delta, ...)
    first_token_at: int | None = None  # first chunk with non-empty content
    last_token_at: int | None = None  # last chunk with non-empty content
    done_at: int | None = None  # stream closed / request finished, whatever the outcome
    chunk_times: list[int] = field(default_factory=list)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_prompt_tokens: int | None = None
    status: str = "ok"
    error_class: str | None = None
    error_message: str | None = None
    http_status: int | None = None
    finish_reason: str | None = None
    # structured workloads (tasks/structured.py): the schema a reply is judged against, what the request
    # asked for (None: the unconstrained twin), and the judgement of an ok reply (None otherwise).
    schema_id: str | None = None
    response_format: str | None = None
    output_parsed: bool | None = None
    output_valid: bool | None = None
    validation_error: str | None = None
    # cancellation (Workload.cancel_share): the delay after sent_at the client was to cancel at (None: not
    # picked), and when it did close the stream (None: the reply ended first, or not picked)
    cancel_after_ns: int | None = None
    cancelled_at: int | None = None
    # multi_turn: the session the request belongs to and its turn in it (1 = the first)
    session_id: str | None = None
    turn: int | None = None
    # reasoning engines (vLLM, SGLang, llama.cpp with a reasoning format): the first chunk with non-empty
    # delta.reasoning_content (first_token_at stays the first *answer* chunk), and
    # usage.completion_tokens_details.reasoning_tokens
    first_reasoning_at: int | None = None
    reasoning_tokens: int | None = None


# Arrow schema of the records in memory (`records_to_arrow`). The staged requests file (Parquet) has the
# same columns with chunk_times as µs gaps (staged form 2, warehouse/chunks.py); the warehouse table mirrors that.
REQUEST_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("cell_id", pa.string()),
        ("request_id", pa.string()),
        ("prompt_id", pa.string()),
        ("engine", pa.string()),
        ("model", pa.string()),
        ("deployment_id", pa.string()),
        ("instance_id", pa.string()),
        ("max_tokens", pa.int32()),
        ("cell_started_at", pa.timestamp("us", tz="UTC")),
        ("scheduled_at", pa.int64()),
        ("sent_at", pa.int64()),
        ("first_chunk_at", pa.int64()),
        ("first_token_at", pa.int64()),
        ("last_token_at", pa.int64()),
        ("done_at", pa.int64()),
        ("chunk_times", pa.list_(pa.int64())),
        ("prompt_tokens", pa.int32()),
        ("completion_tokens", pa.int32()),
        ("cached_prompt_tokens", pa.int32()),
        ("status", pa.string()),
        ("error_class", pa.string()),
        ("error_message", pa.string()),
        ("http_status", pa.int32()),
        ("finish_reason", pa.string()),
        ("schema_id", pa.string()),
        ("response_format", pa.string()),
        ("output_parsed", pa.bool_()),
        ("output_valid", pa.bool_()),
        ("validation_error", pa.string()),
        ("cancel_after_ns", pa.int64()),
        ("cancelled_at", pa.int64()),
        ("session_id", pa.string()),
        ("turn", pa.int32()),
        ("first_reasoning_at", pa.int64()),
        ("reasoning_tokens", pa.int32()),
    ]
)

assert REQUEST_SCHEMA.names == [f.name for f in dataclasses.fields(RequestRecord)]


def records_to_arrow(records: list[RequestRecord]) -> pa.Table:
    """Column-wise conversion (no per-row dicts): the shape the stager and the validator use."""
    columns = {name: [getattr(r, name) for r in records] for name in REQUEST_SCHEMA.names}
    return pa.table(columns, schema=REQUEST_SCHEMA)


# ---------------------------------------------------------------- deployments and cells rows

# Python annotation -> (Arrow type for staging, DuckDB type of the column). A `| None` annotation is a
# nullable column; anything else is NOT NULL.
_TYPES: dict[Any, tuple[pa.DataType, str]] = {
    str: (pa.string(), "VARCHAR"),
    int: (pa.int64(), "BIGINT"),
    float: (pa.float64(), "DOUBLE"),
    bool: (pa.bool_(), "BOOLEAN"),
    datetime: (pa.timestamp("us", tz="UTC"), "TIMESTAMP WITH TIME ZONE"),
    list[str]: (pa.list_(pa.string()), "VARCHAR[]"),
}
# Columns stored narrower than BIGINT (the Arrow type stays int64: DuckDB casts on insert).
_INTEGER_COLUMNS = {"start_order", "concurrency", "repeat", "requests_planned", "warmup_requests", "max_concurrency"}


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    arrow_type: pa.DataType
    duckdb_type: str
    nullable: bool


def _unwrap(hint: Any) -> tuple[Any, bool]:
    """(the annotated type, nullable): `X | None` is a nullable column of X."""
    if isinstance(hint, types.UnionType) and type(None) in hint.__args__:
        (hint,) = [a for a in hint.__args__ if a is not type(None)]
        return hint, True
    return hint, False


def columns(row_type: type) -> tuple[Column, ...]:
    """The columns of a row dataclass, in field order, read from its annotations."""
    hints = typing.get_type_hints(row_type)
    out = []
    for f in dataclasses.fields(row_type):
        hint, nullable = _unwrap(hints[f.name])
        arrow_type, duckdb_type = _TYPES[hint]
        if f.name in _INTEGER_COLUMNS:
            duckdb_type = "INTEGER"
        out.append(Column(f.name, arrow_type, duckdb_type, nullable))
    return tuple(out)


def not_null_columns(row_type: type) -> tuple[str, ...]:
    """The fields not annotated `| None`, in field order (RequestRecord too, whose types are not in _TYPES)."""
    hints = typing.get_type_hints(row_type)
    return tuple(f.name for f in dataclasses.fields(row_type) if not _unwrap(hints[f.name])[1])


def arrow_schema(row_type: type) -> pa.Schema:
    return pa.schema([pa.field(c.name, c.arrow_type, nullable=c.nullable) for c in columns(row_type)])


def rows_to_arrow(rows: list[Any], row_type: type) -> pa.Table:
    """Rows (dataclass instances) as an Arrow table with the contract's types, also when empty."""
    names = [f.name for f in dataclasses.fields(row_type)]
    return pa.table({n: [getattr(r, n) for r in rows] for n in names}, schema=arrow_schema(row_type))


@dataclass(frozen=True, slots=True)
class DeploymentRow:
    """One row of `deployments`: one engine instance of a deployment group, started or not. Frozen:
    an update (a crash seen after a cell) is a new row, `dataclasses.replace(row, ...)`, that the
    caller keeps in place of the old one, so no copy can silently lose it."""

    run_id: str
    instance_id: str
    deployment_id: str
    start_order: int
    engine: str  # the matrix's engine name
    engine_kind: str  # llamacpp | vllm | sglang | external
    model: str
    launcher: str  # process | docker | none
    started: bool
    engine_version: str | None = None
    model_path: str | None = None
    flags: list[str] | None = None  # the engine's command line (never its environment: secrets)
    memory_share: float | None = None
    failure_class: str | None = None  # set whenever the instance did not start or did not last
    failure_message: str | None = None
    log_excerpt: str | None = None
    startup_s: float | None = None
    measured_memory_bytes: int | None = None
    memory_flag: str | None = None  # the engine's own flag as the planner set it
    predicted_budget_bytes: int | None = None
    predicted_kv_bytes: int | None = None
    predicted_fit: bool | None = None
    prediction_note: str | None = None
    image: str | None = None
    # what ran (migration 0012): sha256 of a process engine's binary, or a docker engine's image id
    engine_artifact: str | None = None


@dataclass(frozen=True, slots=True)
class CellRow:
    """One row of `cells`: one bench cell (a workload at a load shape on one instance)."""

    run_id: str
    cell_id: str
    deployment_id: str
    instance_id: str
    engine: str
    model: str
    workload_id: str
    repeat: int
    requests_planned: int
    warmup_requests: int
    started_at: datetime
    wall_ns: int
    load_kind: str  # closed | open
    arrival: str  # closed | poisson | gamma | constant
    concurrency: int | None = None  # closed loop
    rate_rps: float | None = None  # open loop
    burstiness: float | None = None
    max_concurrency: int | None = None
    duration_limit_s: float | None = None
    # The client's own overhead (tasks/loadgen.py); None for an interrupted cell.
    send_lateness_p50_ms: float | None = None
    send_lateness_p99_ms: float | None = None
    loop_lag_p99_ms: float | None = None
    loop_lag_max_ms: float | None = None
    client_kept_up: bool | None = None
    sweep_stop_reason: str | None = None  # on the cell after which a rate sweep's stop rule ended it
    # what the prefix cache held when the cell began: reset | not_cached | reset_failed | not_reset
    # (tasks/engines/cache.py); None where nothing prepared it (a cell run on its own, in tests)
    cache_state: str | None = None
