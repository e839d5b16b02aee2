"""The validation gate's verdict: `Failure` (one failed expectation) and `ValidationReport` (pass/fail,
the failures, the outcome PASSED / FAILED_ROWS / REFUSED, one-line summary, markdown, JSON).

Importable without Great Expectations (the load and the CLI read a verdict; only the gate, in
warehouse/validate.py, runs GX).

The verdict (`ValidationReport.outcome`):
- "passed": every expectation passed; every row is loaded.
- "failed_rows": only row-level expectations of the requests suite failed, and GX named every
  failing row: `rejected` maps each failing request_id to the names of the expectations it failed.
  The load (warehouse/store.py) puts the other rows into `requests`, these into `rejected_requests`,
  and marks the run `validation_status = 'failed_rows'`.
- "refused": anything that cannot be pinned to single request rows refuses the whole run: the
  uniqueness of request_id (which copy would be the bad one?), a failing row without a request_id, an
  expectation GX could not evaluate (an error), or any failure of the deployments or cells suites (few
  rows, and a bad cell or deployment makes its requests meaningless).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from warehouse.chunk_checks import HELPER_COLUMNS

# The gate's verdicts (ValidationReport.outcome); runs.validation_status takes the first two.
PASSED, FAILED_ROWS, REFUSED = "passed", "failed_rows", "refused"

# The column whose value names a failing row in a Failure's examples, per table.
EXAMPLE_KEYS = {"requests": "request_id", "deployments": "instance_id", "cells": "cell_id"}

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
    # GX's own JSON result of each suite that ran, {table: result} (a table without rows has no suite run).
    gx_result: dict[str, Any] = field(default_factory=dict, repr=False)
    table_rows: dict[str, int] = field(default_factory=dict)  # rows per table
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
        """'160 rows of requests, 1 of deployments, 1 of cells' ('160 rows' without table_rows)."""
        others = [f"{n} of {t}" for t, n in self.table_rows.items() if t != "requests"]
        if not others:
            return f"{self.row_count} rows"
        return ", ".join([f"{self.row_count} rows of requests", *others])

    def summary_line(self) -> str:
        if self.success:
            return f"validation passed: {self.rows_text()}, {self.evaluated_expectations} expectations"
        failures = "; ".join(f.describe() for f in self.failures)
        if self.outcome == FAILED_ROWS:
            return (
                f"validation failed: {len(self.rejected)} of {self.row_count} request rows rejected, "
                f"{self.kept_rows} kept: {failures}"
            )
        return "validation failed: " + failures

    def markdown(self) -> str:
        """The result for the Prefect UI (an artifact of the run)."""
        head = (
            f"**{'passed' if self.success else 'FAILED'}**: {self.rows_text()}, "
            f"{self.evaluated_expectations} expectations (Great Expectations {self.gx_version})"
        )
        if self.success:
            return head
        if self.outcome == FAILED_ROWS:
            verdict = (
                f"**{len(self.rejected)} of {self.row_count} request rows rejected, {self.kept_rows} kept.** "
                "The kept rows are loaded into `requests`, the rejected ones into `rejected_requests`, "
                "and the run is marked `validation_status = 'failed_rows'` (left out of `v_nightly` "
                "and `v_comparison`)."
            )
        else:
            names = ", ".join(f"`{f.name}`" for f in self.refusing())
            verdict = f"**The whole run is refused: nothing is loaded.** Not about single request rows: {names}."
        rows = "\n".join(
            f"| `{f.name}` | {f.unexpected_count} | {f.example_text() or f.error or ''} |" for f in self.failures
        )
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


def _short(value: Any) -> str:
    text = "null" if value is None else str(value)
    return text if len(text) <= 40 else text[:37] + "..."
