"""The validation gate: a run's rows are checked by Great Expectations before loading.

`validate_requests(table)` takes the requests table (tasks.records.REQUEST_SCHEMA's columns), runs ONE
expectation suite over it in ONE Great Expectations validation run, and returns a small
`ValidationReport`: pass/fail, one `Failure` per failed expectation (GX expectation type, columns,
failing row count, up to 3 example request_ids with their values), a one-line summary for logs and
flow state, and `to_json()` with the full GX result to save beside the run.

`validate_run(requests, deployments, cells)` is the whole gate of a run: the requests suite plus a
suite for the `deployments` rows and one for the `cells` rows (the flow's list[dict] rows, before
they are staged), all in one ephemeral context, one validation run per suite, combined into ONE
`ValidationReport`. A `Failure` names its table (`deployments.expect_...(...)`; request failures
keep their plain names) and its examples are keyed by instance_id (deployments) or cell_id (cells).
The two row suites mirror the tables' NOT NULL / CHECK / PRIMARY KEY constraints
(warehouse/migrations), so a row the load would refuse is caught here, with a count and examples.

The verdict (`ValidationReport.outcome`):
- "passed": every expectation passed; every row is loaded.
- "failed_rows": only row-level expectations of the requests suite failed, and GX named every
  failing row: `rejected` maps each failing request_id to the names of the expectations it failed.
  The load (warehouse/store.py) puts the other rows into `requests`, these into `rejected_requests`,
  and marks the run `validation_status = 'failed_rows'`.
- "refused": anything that cannot be pinned to single request rows refuses the whole run, as
  before: the uniqueness of request_id (which copy would be the bad one?), a failing row without a
  request_id, an expectation GX could not evaluate (an error), or any failure of the deployments or
  cells suites (few rows, and a bad cell or deployment makes its requests meaningless).
The requests suite runs with GX's result_format COMPLETE (every failing row's request_id, through
`unexpected_index_column_names`); the full lists are dropped from the saved GX result (`to_json`),
which keeps GX's first examples only: the rows themselves go to `rejected_requests`.

How GX is used, and why so:
- GX 1.x on a pandas frame (pyarrow -> pandas through Arrow, default mapping: see `_to_pandas`
  for why not nullable Int64); GX's SQL path on DuckDB is broken (DESIGN.md).
- An ephemeral context per call; per suite (table) a pandas data source / data asset /
  whole-dataframe batch definition, one ExpectationSuite and one ValidationDefinition. Setup costs
  a few ms; the import of great_expectations costs seconds, so it happens lazily inside the function.
- Row conditions are GX 1.x `Condition` objects (`Column("status") == "ok"`); the string form with a
  `condition_parser` is deprecated since GX 1.9 and warns.
- GX has no expectation over list columns, so the `chunk_times` checks are computed here in
  pyarrow/numpy as boolean helper columns (`chunk_times_ordered`, `chunk_times_in_token_window`)
  which GX then expects to be True: GX stays the judge, the helpers only flatten the lists. They
  read either form of chunk_times (warehouse/chunks.py): staged form 2, µs gaps (what the nightly
  flow stages and validates, and what `bakeoff load` reads back), or ns offsets (the records in
  memory, and runs staged before staged form 2).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks.records import STATUSES
from warehouse import chunks

# Columns of REQUEST_SCHEMA handed to GX (chunk_times goes in as the two helper columns below;
# free-text columns carry nothing to validate).
ID_COLUMNS = (
    "run_id",
    "cell_id",
    "request_id",
    "prompt_id",
    "engine",
    "model",
    "deployment_id",
    "instance_id",
)
# In the contract's order:
# scheduled <= sent <= first chunk <= first token <= last token <= done.
TIMESTAMP_COLUMNS = (
    "scheduled_at",
    "sent_at",
    "first_chunk_at",
    "first_token_at",
    "last_token_at",
    "done_at",
)
TOKEN_COLUMNS = ("prompt_tokens", "completion_tokens", "cached_prompt_tokens")
# A request with status "ok" must have reached each of these points.
OK_REQUIRED_COLUMNS = ("sent_at", "first_token_at", "last_token_at", "done_at")
NOT_NULL_COLUMNS = (*ID_COLUMNS, "status", "max_tokens", "cell_started_at", "scheduled_at")
HELPER_COLUMNS = ("chunk_times_ordered", "chunk_times_in_token_window")
INPUT_COLUMNS = (
    *ID_COLUMNS,
    "max_tokens",
    "cell_started_at",
    *TIMESTAMP_COLUMNS,
    "chunk_times",
    *TOKEN_COLUMNS,
    "status",
)

# deployments rows (tasks/deploy.py; table `deployments`, migration 0001)
DEPLOYMENT_NOT_NULL_COLUMNS = (
    "run_id",
    "instance_id",
    "deployment_id",
    "start_order",
    "engine",
    "engine_kind",
    "model",
    "launcher",
    "started",
)
DEPLOYMENT_KEY = ("run_id", "instance_id")
DEPLOYMENT_COLUMNS = (*DEPLOYMENT_NOT_NULL_COLUMNS, "failure_class", "startup_s", "memory_share")

# cells rows (tasks/bench.py; table `cells`, migrations 0001 and 0002)
LOAD_KINDS = ("closed", "open")
CELL_ID_COLUMNS = (
    "run_id",
    "cell_id",
    "deployment_id",
    "instance_id",
    "engine",
    "model",
    "workload_id",
    "load_kind",
)
CELL_COUNT_COLUMNS = ("repeat", "requests_planned", "warmup_requests", "wall_ns")  # NOT NULL, >= 0
CELL_NOT_NULL_COLUMNS = (*CELL_ID_COLUMNS, *CELL_COUNT_COLUMNS, "started_at")
CELL_KEY = ("run_id", "cell_id")
CELL_COLUMNS = (*CELL_NOT_NULL_COLUMNS, "concurrency", "rate_rps")

# The column whose value names a failing row in a Failure's examples, per table.
EXAMPLE_KEYS = {"requests": "request_id", "deployments": "instance_id", "cells": "cell_id"}

# Requests-suite expectations whose failures are not about single rows: a duplicated request_id is a
# fault of the table (both copies fail; neither is the one to drop), and refuses the whole run.
TABLE_LEVEL_EXPECTATIONS = frozenset({"expect_column_values_to_be_unique"})

# The gate's verdicts (ValidationReport.outcome); runs.validation_status takes the first two.
PASSED, FAILED_ROWS, REFUSED = "passed", "failed_rows", "refused"

MAX_EXAMPLES = 3


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed expectation."""

    expectation: str  # GX expectation type, e.g. "expect_column_values_to_be_unique"
    columns: tuple[str, ...]  # the column(s) it is about, in GX's order (column_A, column_B)
    unexpected_count: int  # failing rows (0 when GX raised instead of evaluating)
    element_count: int  # rows the expectation looked at (after its row condition)
    examples: tuple[dict[str, Any], ...] = ()  # up to 3: {"request_id": ..., column: value, ...}
    condition: str | None = None  # the row condition, e.g. "status == 'ok'"
    kwargs: dict[str, Any] = field(default_factory=dict)  # the expectation's GX kwargs
    error: str | None = None  # GX raised while evaluating this expectation
    table: str = "requests"  # the table the rows belong to: requests, deployments or cells
    # Every failing row's request_id, when the failure is row-level (requests suite, not a table-level
    # expectation, no error, GX named each of the unexpected_count rows by a request_id); else ().
    request_ids: tuple[str, ...] = field(default=(), repr=False)

    @property
    def row_level(self) -> bool:
        return bool(self.request_ids)

    @property
    def name(self) -> str:
        text = f"{self.expectation}({', '.join(self.columns)})"
        if self.table != "requests":
            text = f"{self.table}.{text}"
        return f"{text} where {self.condition}" if self.condition else text

    def example_text(self) -> str:
        key = EXAMPLE_KEYS.get(self.table, "request_id")
        parts = []
        for ex in self.examples:
            rid = _short(ex.get(key))
            skip = (key, *HELPER_COLUMNS)  # a helper's value is always False
            rest = [f"{k}={_short(v)}" for k, v in ex.items() if k not in skip]
            parts.append(f"{rid} ({', '.join(rest)})" if rest else f"{rid}")
        return ", ".join(parts)

    def describe(self) -> str:
        if self.error:
            return f"{self.name}: error: {self.error}"
        rows = "row" if self.unexpected_count == 1 else "rows"
        text = f"{self.name}: {self.unexpected_count} {rows}"
        examples = self.example_text()
        return f"{text}, e.g. {examples}" if examples else text

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "expectation": self.expectation,
            "columns": list(self.columns),
            "condition": self.condition,
            "unexpected_count": self.unexpected_count,
            "element_count": self.element_count,
            "examples": [dict(e) for e in self.examples],
            "kwargs": self.kwargs,
            "error": self.error,
            "row_level": self.row_level,
        }


@dataclass(slots=True)
class ValidationReport:
    success: bool
    failures: list[Failure]
    row_count: int = 0  # rows of the requests table
    evaluated_expectations: int = 0
    elapsed_s: float = 0.0
    gx_version: str = ""
    # GX's own JSON result: of the requests suite (validate_requests), or {table: result} of each
    # suite that ran (validate_run; a table without rows has no suite run).
    gx_result: dict[str, Any] = field(default_factory=dict, repr=False)
    table_rows: dict[str, int] = field(default_factory=dict)  # validate_run: rows per table
    # outcome "failed_rows": request_id -> names of the expectations that row failed (Failure.name),
    # in the order of the suite; empty otherwise.
    rejected: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False)

    @property
    def outcome(self) -> str:
        """passed, failed_rows (the failing request rows are set apart) or refused (the whole run)."""
        if self.success:
            return PASSED
        if self.failures and all(f.row_level for f in self.failures):
            return FAILED_ROWS
        return REFUSED

    @property
    def kept_rows(self) -> int:
        """Request rows the load puts into `requests` (none when the run is refused)."""
        return 0 if self.outcome == REFUSED else self.row_count - len(self.rejected)

    def refusing(self) -> list[Failure]:
        """The failures that refuse the whole run (not about single request rows)."""
        return [f for f in self.failures if not f.row_level]

    def rows_text(self) -> str:
        """'160 rows', or with validate_run '160 rows of requests, 1 of deployments, 1 of cells'."""
        others = [f"{n} of {t}" for t, n in self.table_rows.items() if t != "requests"]
        if not others:
            return f"{self.row_count} rows"
        return ", ".join([f"{self.row_count} rows of requests", *others])

    def summary_line(self) -> str:
        if self.success:
            return (
                f"validation passed: {self.rows_text()}, "
                f"{self.evaluated_expectations} expectations"
            )
        failures = "; ".join(f.describe() for f in self.failures)
        if self.outcome == FAILED_ROWS:
            return (f"validation failed: {len(self.rejected)} of {self.row_count} request rows rejected, "
                    f"{self.kept_rows} kept: {failures}")
        return "validation failed: " + failures

    def markdown(self) -> str:
        """The result for the Prefect UI (an artifact of the run)."""
        head = f"**{'passed' if self.success else 'FAILED'}**: {self.rows_text()}, " \
               f"{self.evaluated_expectations} expectations (Great Expectations {self.gx_version})"
        if self.success:
            return head
        if self.outcome == FAILED_ROWS:
            verdict = (f"**{len(self.rejected)} of {self.row_count} request rows rejected, {self.kept_rows} kept.** "
                       "The kept rows are loaded into `requests`, the rejected ones into `rejected_requests`, "
                       "and the run is marked `validation_status = 'failed_rows'` (left out of `v_nightly` "
                       "and `v_comparison`).")
        else:
            names = ", ".join(f"`{f.name}`" for f in self.refusing())
            verdict = (f"**The whole run is refused: nothing is loaded.** Not about single request rows: "
                       f"{names}.")
        rows = "\n".join(f"| `{f.name}` | {f.unexpected_count} | {f.example_text() or f.error or ''} |"
                         for f in self.failures)
        return f"{head}\n\n{verdict}\n\n| expectation | failing rows | examples |\n|---|---:|---|\n{rows}"

    def to_json(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "outcome": self.outcome,
            "summary": self.summary_line(),
            "row_count": self.row_count,
            "kept_rows": self.kept_rows,
            "rejected_rows": len(self.rejected),
            "table_rows": dict(self.table_rows),
            "evaluated_expectations": self.evaluated_expectations,
            "elapsed_s": self.elapsed_s,
            "great_expectations_version": self.gx_version,
            "failures": [f.to_json() for f in self.failures],
            "gx_result": self.gx_result,
        }


def validate_requests(table: pa.Table) -> ValidationReport:
    """Validate raw request records (REQUEST_SCHEMA) with one GX suite in one validation run."""
    _check_requests_columns(table)
    gx, gxe, Column = _import_gx()  # seconds on the first call; not counted in elapsed_s
    started = time.perf_counter()
    context = _context(gx)
    result = _run_suite(
        gx, context, "requests", _to_pandas(_with_helper_columns(table)), _expectations(gxe, Column)
    )
    failures = [_failure(r) for r in result.results if not r.success]
    return ValidationReport(
        success=bool(result.success),
        failures=failures,
        row_count=table.num_rows,
        evaluated_expectations=len(result.results),
        elapsed_s=round(time.perf_counter() - started, 4),
        gx_version=gx.__version__,
        gx_result=_saved(result.to_json_dict()),
        rejected=_rejected(failures),
    )


def validate_run(
    requests: pa.Table, deployments: list[dict], cells: list[dict]
) -> ValidationReport:
    """The gate of a whole run: the requests suite, the deployments suite and the cells suite, in
    one GX context, one validation run per suite, combined into one report.

    deployments and cells are the flow's rows (dicts); a key missing from a dict is a null, and an
    empty list is valid (its suite is not run: nothing to check)."""
    _check_requests_columns(requests)
    gx, gxe, Column = _import_gx()
    started = time.perf_counter()
    context = _context(gx)
    suites = (
        ("requests", requests.num_rows,
         lambda: _to_pandas(_with_helper_columns(requests)), lambda: _expectations(gxe, Column)),
        ("deployments", len(deployments),
         lambda: _rows_to_pandas(deployments, DEPLOYMENT_COLUMNS),
         lambda: _deployment_expectations(gxe, Column)),
        ("cells", len(cells),
         lambda: _rows_to_pandas(cells, CELL_COLUMNS), lambda: _cell_expectations(gxe)),
    )
    success, failures, evaluated, gx_results = True, [], 0, {}
    for table, rows, frame, expectations in suites:
        if table != "requests" and rows == 0:
            continue
        result = _run_suite(gx, context, table, frame(), expectations())
        success = success and bool(result.success)
        failures += [_failure(r, table) for r in result.results if not r.success]
        evaluated += len(result.results)
        gx_results[table] = _saved(result.to_json_dict())
    return ValidationReport(
        success=success,
        failures=failures,
        row_count=requests.num_rows,
        evaluated_expectations=evaluated,
        elapsed_s=round(time.perf_counter() - started, 4),
        gx_version=gx.__version__,
        gx_result=gx_results,
        table_rows={table: rows for table, rows, _, _ in suites},
        rejected=_rejected(failures),
    )


def _rejected(failures: list[Failure]) -> dict[str, tuple[str, ...]]:
    """request_id -> names of the failures it is in, when every failure is row-level; else {}."""
    if not failures or not all(f.row_level for f in failures):
        return {}
    names: dict[str, list[str]] = {}
    for f in failures:
        for request_id in f.request_ids:
            names.setdefault(request_id, []).append(f.name)
    return {request_id: tuple(n) for request_id, n in names.items()}


def _saved(result: dict[str, Any]) -> dict[str, Any]:
    """GX's JSON result without the full per-row lists of result_format COMPLETE (as many entries as
    failing rows): what is saved with the run stays small; the examples (partial_*) stay."""
    for r in result.get("results", []):
        if isinstance(r.get("result"), dict):
            for key in ("unexpected_list", "unexpected_index_list"):
                r["result"].pop(key, None)
    return result


def _check_requests_columns(table: pa.Table) -> None:
    missing = [c for c in INPUT_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"requests table lacks column(s) {missing}; expected REQUEST_SCHEMA")


def _context(gx: Any) -> Any:
    context = gx.get_context(mode="ephemeral")
    _silence_progress_bars(context)
    return context


def _run_suite(gx: Any, context: Any, table: str, frame: Any, expectations: list[Any]) -> Any:
    """One pandas data source / asset / whole-dataframe batch definition, one suite and one
    validation definition for `table` in `context`; returns GX's validation result."""
    batch_definition = (
        context.data_sources.add_pandas(table)
        .add_dataframe_asset(table)
        .add_batch_definition_whole_dataframe("all_rows")
    )
    # Build the suite whole, then register it: `suite.add_expectation` on a suite that already
    # belongs to a context re-serializes the whole suite into the store each time (quadratic;
    # about 1 s for the requests suite).
    name = f"bakeoff_{table}"
    suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=name, data=batch_definition, suite=suite)
    )
    # requests: COMPLETE, so that GX names EVERY failing row (unexpected_index_list, by request_id),
    # not only the first examples; without the query string that would repeat the same indices.
    return definition.run(
        batch_parameters={"dataframe": frame},
        result_format={
            "result_format": "COMPLETE" if table == "requests" else "SUMMARY",
            "partial_unexpected_count": MAX_EXAMPLES,
            "unexpected_index_column_names": [EXAMPLE_KEYS[table]],
            "return_unexpected_index_query": False,
        },
    )


# --- the suite -----------------------------------------------------------------------------------


def _expectations(gxe: Any, Column: Any) -> list[Any]:
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
                    column_A=later,
                    column_B=earlier,
                    or_equal=True,
                    ignore_row_if="either_value_is_missing",
                )
            )
    ok = Column("status") == "ok"
    ex += [
        gxe.ExpectColumnValuesToNotBeNull(column=c, row_condition=ok) for c in OK_REQUIRED_COLUMNS
    ]
    # Helper columns computed in pyarrow (GX has no list expectations); GX judges them.
    ex += [gxe.ExpectColumnValuesToBeInSet(column=c, value_set=[True]) for c in HELPER_COLUMNS]
    return ex


def _deployment_expectations(gxe: Any, Column: Any) -> list[Any]:
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
    ex.append(
        gxe.ExpectColumnValuesToBeBetween(
            column="memory_share", min_value=0, max_value=1, strict_min=True
        )
    )
    return ex


def _cell_expectations(gxe: Any) -> list[Any]:
    """The `cells` table's constraints: NOT NULLs, PRIMARY KEY (run_id, cell_id), counts >= 0,
    concurrency >= 1 and rate_rps > 0 where set, load_kind closed or open (tasks/bench.py)."""
    ex: list[Any] = [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in CELL_NOT_NULL_COLUMNS]
    ex.append(gxe.ExpectCompoundColumnsToBeUnique(column_list=list(CELL_KEY)))
    ex.append(gxe.ExpectColumnValuesToBeInSet(column="load_kind", value_set=list(LOAD_KINDS)))
    ex += [gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0) for c in CELL_COUNT_COLUMNS]
    ex.append(gxe.ExpectColumnValuesToBeBetween(column="concurrency", min_value=1))
    ex.append(gxe.ExpectColumnValuesToBeBetween(column="rate_rps", min_value=0, strict_min=True))
    return ex


# --- data preparation ----------------------------------------------------------------------------


def _with_helper_columns(table: pa.Table) -> pa.Table:
    """Select the validated columns and replace chunk_times by two boolean helper columns.

    The table is in memory (ns offsets) or staged (form 2: µs gaps, marked in its schema metadata;
    warehouse/chunks.py); an older staged run read back from disk is in the in-memory form.

    chunk_times_ordered: every offset >= the one before it; as gaps, every gap >= 0, the first one
    included, which also says that the first chunk is not before sent_at (µs resolution).
    chunk_times_in_token_window: every offset within [first_token_at, last_token_at]; as gaps, the
    offsets are rebuilt (sent_at // 1000 + running sum, µs) and compared with first_token_at // 1000 and
    last_token_at // 1000. A chunk recorded while either bound is null, or a null offset or gap, is
    False. Empty or null list: both True.
    """
    n = table.num_rows
    lists = table.column("chunk_times")
    if chunks.is_us_gaps(table.schema):
        v, gaps, parents, value_null = chunks.gaps_to_offsets_us(lists, table.column("sent_at"))
        scale = chunks.NS_PER_US
        unordered = np.zeros(n, dtype=bool)
        unordered[parents[(gaps < 0) | value_null]] = True
    else:
        lists = lists.combine_chunks()
        values = pc.list_flatten(lists)
        parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False).astype(np.int64)
        value_null = values.is_null().to_numpy(zero_copy_only=False)
        v = values.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        scale = 1
        unordered = np.zeros(n, dtype=bool)
        if v.size > 1:
            same_list = parents[1:] == parents[:-1]
            step_back = same_list & (v[1:] < v[:-1])
            unordered[parents[1:][step_back]] = True
        unordered[parents[value_null]] = True

    lo, lo_null = _int_with_nulls(table.column("first_token_at"))
    hi, hi_null = _int_with_nulls(table.column("last_token_at"))
    lo, hi = lo // scale, hi // scale
    outside = value_null | lo_null[parents] | hi_null[parents]
    outside |= (v < lo[parents]) | (v > hi[parents])
    out_of_window = np.zeros(n, dtype=bool)
    out_of_window[parents[outside]] = True

    keep = [c for c in INPUT_COLUMNS if c != "chunk_times"]
    return (
        table.select(keep)
        .append_column("chunk_times_ordered", pa.array(~unordered))
        .append_column("chunk_times_in_token_window", pa.array(~out_of_window))
    )


def _int_with_nulls(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    nulls = column.is_null().to_numpy(zero_copy_only=False)
    values = column.fill_null(0).to_numpy().astype(np.int64, copy=False)
    return values, nulls


def _get(row: Any, column: str) -> Any:
    """A column of a row: a row dataclass (tasks/records.py) or a dict (a staged file read back)."""
    return row.get(column) if isinstance(row, dict) else getattr(row, column, None)


def _rows_to_pandas(rows: list[dict], columns: tuple[str, ...]):
    """The flow's rows (dicts) -> pandas through Arrow, only `columns`; a key missing from a dict
    is a null. A column Arrow cannot type (mixed values, e.g. 0.5 and "half") is kept as a pandas
    object column of the values as they are, so GX reports it (as a failure or an error) instead
    of the conversion raising."""
    import pandas as pd

    picked = [{c: _get(row, c) for c in columns} for row in rows]
    try:
        return _to_pandas(pa.Table.from_pylist(picked))
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        pass
    series = {}
    for c in columns:
        values = [row[c] for row in picked]
        try:
            series[c] = pa.array(values).to_pandas()
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            series[c] = pd.Series(values, dtype=object)
    return pd.DataFrame(series)


def _to_pandas(table: pa.Table):
    """Arrow -> pandas with pyarrow's default mapping: an integer column holding nulls becomes
    float64 with NaN, one without nulls stays int64.

    Deliberately NOT pandas' nullable Int64 (or ArrowDtype): GX 1.24's `column_values.between`
    is vectorized only when `column.dtype in [int, float]` and otherwise maps a Python function
    over every value (about 0.2 s per column at 100,000 rows). float64 is exact for integers
    below 2**53, i.e. for ns offsets up to 104 days from the cell start; examples are turned back
    into ints.
    """
    return table.to_pandas()


# --- GX plumbing ---------------------------------------------------------------------------------


def _import_gx():
    # GX 1.24 has no analytics client left (the variable is only named in a docstring), but older
    # 1.x releases read it: keep it off without overriding an explicit setting.
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    return gx, gxe, Column


def _silence_progress_bars(context: Any) -> None:
    # The tqdm bar "Calculating Metrics" is on unless the context's progress_bars config says off.
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)


def _failure(result: Any, table: str = "requests") -> Failure:
    config = result.expectation_config
    kwargs = {k: v for k, v in dict(config.kwargs).items() if k != "batch_id"}
    if "column" in kwargs:
        columns: tuple[str, ...] = (kwargs["column"],)
    elif "column_A" in kwargs:
        columns = (kwargs["column_A"], kwargs["column_B"])
    elif "column_list" in kwargs:
        columns = tuple(kwargs["column_list"])
    else:
        columns = ()
    condition = kwargs.get("row_condition")
    condition_text = _condition_text(condition) if condition else None
    if condition is not None and not isinstance(condition, (str, dict)):
        kwargs["row_condition"] = condition_text

    error = _exception_message(result.exception_info)
    if error is not None:
        return Failure(
            expectation=config.type,
            columns=columns,
            unexpected_count=0,
            element_count=0,
            condition=condition_text,
            kwargs=_plain(kwargs),
            error=error,
            table=table,
        )
    res = result.result or {}
    examples = tuple(
        {k: _plain(v) for k, v in row.items()}
        for row in (res.get("partial_unexpected_index_list") or [])[:MAX_EXAMPLES]
    )
    unexpected_count = int(res.get("unexpected_count") or 0)
    return Failure(
        expectation=config.type,
        columns=columns,
        unexpected_count=unexpected_count,
        element_count=int(res.get("element_count") or 0),
        examples=examples,
        condition=condition_text,
        kwargs=_plain(kwargs),
        table=table,
        request_ids=_row_ids(res, table, config.type, unexpected_count),
    )


def _row_ids(res: dict, table: str, expectation: str, unexpected_count: int) -> tuple[str, ...]:
    """The request_id of every failing row, or () when the failure cannot be pinned to rows: not the
    requests suite, a table-level expectation, no full list (not COMPLETE), a list shorter than the
    count, or a failing row without a request_id (nothing to name it by)."""
    if table != "requests" or expectation in TABLE_LEVEL_EXPECTATIONS or unexpected_count == 0:
        return ()
    rows = res.get("unexpected_index_list")
    if not isinstance(rows, list) or len(rows) != unexpected_count:
        return ()
    ids = [row.get("request_id") if isinstance(row, dict) else None for row in rows]
    if not all(isinstance(i, str) for i in ids) or len(set(ids)) != len(ids):
        return ()
    return tuple(ids)


def _exception_message(info: Any) -> str | None:
    """GX puts either {"raised_exception": ..., "exception_message": ...} on a result, or (when a
    metric failed to resolve) a dict of those keyed by the metric configuration id."""
    if not isinstance(info, dict):
        return None
    if "raised_exception" in info:
        return str(info.get("exception_message")) if info.get("raised_exception") else None
    messages = [
        str(v.get("exception_message"))
        for v in info.values()
        if isinstance(v, dict) and v.get("raised_exception")
    ]
    return "; ".join(dict.fromkeys(messages)) if messages else None


def _condition_text(condition: Any) -> str:
    if isinstance(condition, dict):  # serialized ComparisonCondition
        column = condition.get("column", {})
        name = column.get("name") if isinstance(column, dict) else column
        return f"{name} {condition.get('operator')} {condition.get('parameter')!r}"
    if hasattr(condition, "column") and hasattr(condition, "operator"):
        return f"{condition.column.name} {condition.operator} {condition.parameter!r}"
    return str(condition)


def _plain(value: Any) -> Any:
    """JSON-friendly: numpy scalars to Python, pd.NA/NaN to None, containers recursively."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if value != value:  # NaN: a null in a float64 column
            return None
        return int(value) if value.is_integer() else value
    try:
        import pandas as pd

        if value is pd.NA or value is pd.NaT:
            return None
    except ImportError:  # pragma: no cover
        pass
    return str(value)


def _short(value: Any) -> str:
    text = "null" if value is None else str(value)
    return text if len(text) <= 40 else text[:37] + "..."
