"""Great Expectations plumbing of the gate: import GX lazily, an ephemeral context, one suite run over
a pandas frame, Arrow/rows -> pandas, and GX's results -> Failure.

How GX is used, and why so:
- GX 1.x on a pandas frame (pyarrow -> pandas through Arrow, default mapping: see `to_pandas` for why
  not nullable Int64); GX's SQL path on DuckDB is broken, so it is not used.
- An ephemeral context per gate run; per suite (table) a pandas data source / data asset /
  whole-dataframe batch definition, one ExpectationSuite and one ValidationDefinition. Setup costs a
  few ms; the import of great_expectations costs seconds, so it happens lazily (`import_gx`).
- Row conditions are GX 1.x `Condition` objects (`Column("status") == "ok"`); the string form with a
  `condition_parser` is deprecated since GX 1.9 and warns.
- The requests suite runs with result_format COMPLETE (every failing row's request_id, through
  `unexpected_index_column_names`); the full lists are dropped from the saved GX result (`saved`),
  which keeps GX's first examples only: the rows themselves go to `rejected_requests`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from warehouse.suites import TABLE_LEVEL_EXPECTATIONS
from warehouse.verdict import EXAMPLE_KEYS, MAX_EXAMPLES, Failure

if TYPE_CHECKING:
    import pandas as pd


def import_gx() -> tuple[Any, Any, Any]:
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


def failure(result: Any, table: str = "requests") -> Failure:
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


def _row_ids(res: dict[str, Any], table: str, expectation: str, unexpected_count: int) -> tuple[str, ...]:
    """The request_id of every failing row, or () when the failure cannot be pinned to rows: not the
    requests suite, a table-level expectation, no full list (not COMPLETE), a list shorter than the
    count, or a failing row without a request_id (nothing to name it by)."""
    if table != "requests" or expectation in TABLE_LEVEL_EXPECTATIONS or unexpected_count == 0:
        return ()
    rows = res.get("unexpected_index_list")
    if not isinstance(rows, list) or len(rows) != unexpected_count:
        return ()
    ids = [row.get("request_id") if isinstance(row, dict) else None for row in rows]
    names = [i for i in ids if isinstance(i, str)]
    if len(names) != len(ids) or len(set(names)) != len(names):
        return ()
    return tuple(names)


def _exception_message(info: Any) -> str | None:
    """GX puts either {"raised_exception": ..., "exception_message": ...} on a result, or (when a
    metric failed to resolve) a dict of those keyed by the metric configuration id."""
    if not isinstance(info, dict):
        return None
    if "raised_exception" in info:
        return str(info.get("exception_message")) if info.get("raised_exception") else None
    messages = [
        str(v.get("exception_message")) for v in info.values() if isinstance(v, dict) and v.get("raised_exception")
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


def new_context(gx: Any) -> Any:
    context = gx.get_context(mode="ephemeral")
    _silence_progress_bars(context)
    return context


def run_suite(gx: Any, context: Any, table: str, frame: Any, expectations: list[Any]) -> Any:
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


def saved(result: dict[str, Any]) -> dict[str, Any]:
    """GX's JSON result without the full per-row lists of result_format COMPLETE (as many entries as
    failing rows): what is saved with the run stays small; the examples (partial_*) stay."""
    for r in result.get("results", []):
        if isinstance(r.get("result"), dict):
            for key in ("unexpected_list", "unexpected_index_list"):
                r["result"].pop(key, None)
    return result


def _get(row: Any, column: str) -> Any:
    """A column of a row: a row dataclass (tasks/records.py) or a dict (a staged file read back)."""
    return row.get(column) if isinstance(row, dict) else getattr(row, column, None)


def rows_to_pandas(rows: list[Any], columns: tuple[str, ...]) -> pd.DataFrame:
    """Rows (dataclasses or dicts) -> pandas through Arrow, only `columns`; a key missing from a dict
    is a null. A column Arrow cannot type (mixed values, e.g. 0.5 and "half") is kept as a pandas
    object column of the values as they are, so GX reports it (as a failure or an error) instead
    of the conversion raising."""
    import pandas as pd

    picked = [{c: _get(row, c) for c in columns} for row in rows]
    try:
        return to_pandas(pa.Table.from_pylist(picked))
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


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """Arrow -> pandas with pyarrow's default mapping: an integer column holding nulls becomes
    float64 with NaN, one without nulls stays int64.

    Deliberately NOT pandas' nullable Int64 (or ArrowDtype): GX 1.24's `column_values.between`
    is vectorized only when `column.dtype in [int, float]` and otherwise maps a Python function
    over every value (about 0.2 s per column at 100,000 rows). float64 is exact for integers
    below 2**53, i.e. for ns offsets up to 104 days from the cell start; examples are turned back
    into ints.
    """
    return table.to_pandas()
