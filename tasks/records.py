"""The raw request record: one row per request, nothing derived, as DESIGN.md's contract says.

Timestamps are integer nanoseconds of `time.monotonic_ns()` relative to the start of the cell
(`cell_started_ns`), so they are exact, comparable within a cell, and never jump with the wall clock.
The cell's wall-clock start is kept beside them (`cell_started_at`) to place the cell in time.
`chunk_times` holds the offset of every *content* chunk (non-empty delta), same clock and unit.
Token counts are what the server reported in `usage`; None means the server sent no usage, never a
guess from `max_tokens`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime

import pyarrow as pa

STATUSES = ("ok", "http_error", "timeout", "disconnected", "bad_stream", "cancelled")


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
    ]
)

assert REQUEST_SCHEMA.names == [f.name for f in dataclasses.fields(RequestRecord)]


def records_to_arrow(records: list[RequestRecord]) -> pa.Table:
    """Column-wise conversion (no per-row dicts): the shape the stager and the validator use."""
    columns = {name: [getattr(r, name) for r in records] for name in REQUEST_SCHEMA.names}
    return pa.table(columns, schema=REQUEST_SCHEMA)
