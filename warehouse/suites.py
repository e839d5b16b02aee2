"""The gate's expectation suites: which columns of which table are checked how.

Column lists come from the row contracts (tasks/records.py: RequestRecord, DeploymentRow, CellRow), so a
column a migration makes NOT NULL is checked once its field says so; the row suites mirror the tables'
NOT NULL / CHECK / PRIMARY KEY constraints (warehouse/migrations), so a row the load would refuse is
caught here, with a count and examples. GX's modules are passed in (`gxe`, `Column`): this module does
not import great_expectations.
"""

from __future__ import annotations

from typing import Any

from tasks.records import CACHE_STATES, STATUSES, CellRow, DeploymentRow, RequestRecord, columns, not_null_columns
from warehouse.chunk_checks import HELPER_COLUMNS

# Columns of the staged requests handed to GX (chunk_times goes in as the helper columns; free-text
# columns carry nothing to validate).
ID_COLUMNS = ("run_id", "cell_id", "request_id", "prompt_id", "engine", "model", "deployment_id", "instance_id")
# In the contract's order: scheduled <= sent <= first chunk <= first token <= last token <= done.
TIMESTAMP_COLUMNS = ("scheduled_at", "sent_at", "first_chunk_at", "first_token_at", "last_token_at", "done_at")
TOKEN_COLUMNS = ("prompt_tokens", "completion_tokens", "cached_prompt_tokens")
# A request with status "ok" must have reached each of these points.
OK_REQUIRED_COLUMNS = ("sent_at", "first_token_at", "last_token_at", "done_at")
# chunk_times is judged by the helper columns (a null list is no chunk). status right after the ids: GX
# orders its results by column, as first named in the suite, and a row's failed expectations list status
# before max_tokens and the timestamps.
_REQUIRED = [c for c in not_null_columns(RequestRecord) if c != "chunk_times"]
NOT_NULL_COLUMNS = (*ID_COLUMNS, "status", *(c for c in _REQUIRED if c not in (*ID_COLUMNS, "status")))
assert set(NOT_NULL_COLUMNS) == set(_REQUIRED), "an id column of the suite is nullable in RequestRecord"
INPUT_COLUMNS = (
    *ID_COLUMNS,
    "max_tokens",
    "cell_started_at",
    *TIMESTAMP_COLUMNS,
    "chunk_times",
    *TOKEN_COLUMNS,
    "status",
)

DEPLOYMENT_NOT_NULL_COLUMNS = not_null_columns(DeploymentRow)
DEPLOYMENT_KEY = ("run_id", "instance_id")
DEPLOYMENT_COLUMNS = tuple(c.name for c in columns(DeploymentRow))

LOAD_KINDS = ("closed", "open")
CELL_COUNT_COLUMNS = ("repeat", "requests_planned", "warmup_requests", "wall_ns")  # NOT NULL, >= 0
CELL_NOT_NULL_COLUMNS = not_null_columns(CellRow)
CELL_KEY = ("run_id", "cell_id")
CELL_COLUMNS = tuple(c.name for c in columns(CellRow))

# Requests-suite expectations whose failures are not about single rows: a duplicated request_id is a
# fault of the table (both copies fail; neither is the one to drop), and refuses the whole run.
TABLE_LEVEL_EXPECTATIONS = frozenset({"expect_column_values_to_be_unique"})


def request_expectations(gxe: Any, Column: Any) -> list[Any]:
    ex: list[Any] = []
    ex.append(gxe.ExpectColumnValuesToBeUnique(column="request_id"))
    ex += [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in NOT_NULL_COLUMNS]
    ex.append(gxe.ExpectColumnValuesToBeInSet(column="status", value_set=list(STATUSES)))
    # Nulls are skipped by map expectations: ">= 0 where not null".
    ex += [gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0) for c in TIMESTAMP_COLUMNS]
    ex.append(gxe.ExpectColumnValuesToBeBetween(column="max_tokens", min_value=0, strict_min=True))
    ex += [gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0) for c in TOKEN_COLUMNS]
    # Ordering over EVERY pair, not just neighbours: intermediate points are null when a request
    # failed early (e.g. an http_error has sent_at and done_at but no first_chunk_at), and a
    # neighbour-only chain would then never compare done_at with sent_at.
    for i, earlier in enumerate(TIMESTAMP_COLUMNS):
        for later in TIMESTAMP_COLUMNS[i + 1 :]:
            ex.append(
                gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                    column_A=later, column_B=earlier, or_equal=True, ignore_row_if="either_value_is_missing"
                )
            )
    ok = Column("status") == "ok"
    ex += [gxe.ExpectColumnValuesToNotBeNull(column=c, row_condition=ok) for c in OK_REQUIRED_COLUMNS]
    # Helper columns computed in pyarrow (warehouse/chunk_checks.py); GX judges them.
    ex += [gxe.ExpectColumnValuesToBeInSet(column=c, value_set=[True]) for c in HELPER_COLUMNS]
    return ex


def deployment_expectations(gxe: Any, Column: Any) -> list[Any]:
    """The `deployments` table's constraints: NOT NULLs, PRIMARY KEY (run_id, instance_id),
    CHECK (started OR failure_class IS NOT NULL), startup_s >= 0, memory_share in (0, 1]."""
    ex: list[Any] = [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in DEPLOYMENT_NOT_NULL_COLUMNS]
    ex.append(gxe.ExpectCompoundColumnsToBeUnique(column_list=list(DEPLOYMENT_KEY)))
    ex.append(gxe.ExpectColumnValuesToBeInSet(column="started", value_set=[True, False]))
    # A null `started` is the not-null expectation's finding, not this one's.
    ex.append(
        gxe.ExpectColumnValuesToNotBeNull(column="failure_class", row_condition=Column("started") == False)  # noqa: E712
    )
    ex.append(gxe.ExpectColumnValuesToBeBetween(column="startup_s", min_value=0))
    ex.append(gxe.ExpectColumnValuesToBeBetween(column="memory_share", min_value=0, max_value=1, strict_min=True))
    return ex


def cell_expectations(gxe: Any) -> list[Any]:
    """The `cells` table's constraints: NOT NULLs, PRIMARY KEY (run_id, cell_id), counts >= 0,
    concurrency >= 1 and rate_rps > 0 where set, load_kind closed or open (tasks/bench.py), cache_state one
    of tasks/engines/cache.py's where set."""
    ex: list[Any] = [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in CELL_NOT_NULL_COLUMNS]
    ex.append(gxe.ExpectCompoundColumnsToBeUnique(column_list=list(CELL_KEY)))
    ex.append(gxe.ExpectColumnValuesToBeInSet(column="load_kind", value_set=list(LOAD_KINDS)))
    ex.append(gxe.ExpectColumnValuesToBeInSet(column="cache_state", value_set=list(CACHE_STATES)))  # NULLs pass
    ex += [gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0) for c in CELL_COUNT_COLUMNS]
    ex.append(gxe.ExpectColumnValuesToBeBetween(column="concurrency", min_value=1))
    ex.append(gxe.ExpectColumnValuesToBeBetween(column="rate_rps", min_value=0, strict_min=True))
    return ex
