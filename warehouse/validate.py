"""The validation gate: a run's staged rows are checked by Great Expectations before loading.

`validate_run(requests, deployments, cells)` runs the requests suite over the staged requests table
(staged form 2: chunk_times as µs gaps, warehouse/chunks.py) and a suite each over the `deployments`
and `cells` rows, in one ephemeral GX context, one validation run per suite, combined into ONE
`ValidationReport` (warehouse/verdict.py). A `Failure` names its table (`deployments.expect_...(...)`;
request failures keep their plain names) and its examples are keyed by instance_id (deployments) or
cell_id (cells). The load takes the report as its verdict: store.gate_and_load does both.

The parts: the verdict types (warehouse/verdict.py, no GX import), the suites (warehouse/suites.py),
the chunk_times helper columns (warehouse/chunk_checks.py), the GX plumbing (warehouse/gx_runner.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from warehouse import gx_runner, suites
from warehouse.chunk_checks import with_helper_columns
from warehouse.verdict import FAILED_ROWS, PASSED, REFUSED, Failure, ValidationReport

__all__ = ["FAILED_ROWS", "PASSED", "REFUSED", "Failure", "ValidationReport", "validate_run"]


def validate_run(requests: pa.Table, deployments: list[Any], cells: list[Any]) -> ValidationReport:
    """The gate of a whole run: the requests suite, the deployments suite and the cells suite, in
    one GX context, one validation run per suite, combined into one report.

    requests: in staged form 2 (store.stage_run writes it so). deployments and cells: row dataclasses
    (tasks/records.py) or dicts (a staged file read back, or another writer's rows); a key missing from
    a dict is a null, and an empty list is valid (its suite is not run: nothing to check)."""
    _check_requests_columns(requests)
    gx, gxe, Column = gx_runner.import_gx()  # seconds on the first call; not counted in elapsed_s
    started = time.perf_counter()
    frame = gx_runner.to_pandas(with_helper_columns(requests.select(suites.INPUT_COLUMNS)))
    context = gx_runner.new_context(gx)
    runs: tuple[tuple[str, int, Callable[[], Any], Callable[[], list[Any]]], ...] = (
        ("requests", requests.num_rows, lambda: frame, lambda: suites.request_expectations(gxe, Column)),
        (
            "deployments",
            len(deployments),
            lambda: gx_runner.rows_to_pandas(deployments, suites.DEPLOYMENT_COLUMNS),
            lambda: suites.deployment_expectations(gxe, Column),
        ),
        (
            "cells",
            len(cells),
            lambda: gx_runner.rows_to_pandas(cells, suites.CELL_COLUMNS),
            lambda: suites.cell_expectations(gxe),
        ),
    )
    success, failures, evaluated, gx_results = True, [], 0, {}
    for table, rows, data, expectations in runs:
        if table != "requests" and rows == 0:
            continue
        result = gx_runner.run_suite(gx, context, table, data(), expectations())
        success = success and bool(result.success)
        failures += [gx_runner.failure(r, table) for r in result.results if not r.success]
        evaluated += len(result.results)
        gx_results[table] = gx_runner.saved(result.to_json_dict())
    return ValidationReport(
        success=success,
        failures=failures,
        row_count=requests.num_rows,
        evaluated_expectations=evaluated,
        elapsed_s=round(time.perf_counter() - started, 4),
        gx_version=gx.__version__,
        gx_result=gx_results,
        table_rows={table: rows for table, rows, _, _ in runs},
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


def _check_requests_columns(table: pa.Table) -> None:
    missing = [c for c in suites.INPUT_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"requests table lacks column(s) {missing}; expected REQUEST_SCHEMA")
