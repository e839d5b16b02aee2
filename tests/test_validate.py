"""The validation gate (warehouse/validate.py, validate_run): valid records pass; each kind of bad row
fails, named by its expectation and column, with the right count. The requests are judged as staged
(staged form 2, chunk_times as µs gaps), as the nightly flow and `bakeoff load` hand them over."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from tasks.records import REQUEST_SCHEMA, RequestRecord, records_to_arrow
from warehouse.chunks import to_staged
from warehouse.validate import FAILED_ROWS, PASSED, REFUSED, validate_run

PAIR = "expect_column_pair_values_a_to_be_greater_than_b"
BETWEEN = "expect_column_values_to_be_between"
IN_SET = "expect_column_values_to_be_in_set"
NOT_NULL = "expect_column_values_to_not_be_null"
UNIQUE = "expect_column_values_to_be_unique"

CELL_START = datetime(2026, 1, 1, 3, 0, tzinfo=UTC)


def ok_record(i: int, **changes) -> RequestRecord:
    """A successful streamed request: 4 content chunks, usage reported."""
    t0 = i * 1_000_000
    record = RequestRecord(
        run_id="run-1",
        cell_id="cell-1",
        request_id=f"r-{i}",
        prompt_id=f"p-{i % 3}",
        engine="llamacpp",
        model="smollm2-135m",
        deployment_id="dep-1",
        instance_id="inst-1",
        max_tokens=64,
        cell_started_at=CELL_START,
        scheduled_at=t0,
        sent_at=t0 + 100,
        first_chunk_at=t0 + 1_000,
        first_token_at=t0 + 1_500,
        last_token_at=t0 + 4_500,
        done_at=t0 + 5_000,
        chunk_times=[t0 + 1_500, t0 + 2_500, t0 + 3_500, t0 + 4_500],
        prompt_tokens=12,
        completion_tokens=4,
        cached_prompt_tokens=0,
        status="ok",
        finish_reason="stop",
    )
    for name, value in changes.items():
        setattr(record, name, value)
    return record


def valid_records() -> list[RequestRecord]:
    """Four ok rows (one without usage) plus failures that stopped at different points."""
    t = 10_000_000
    return [
        ok_record(0),
        ok_record(1),
        ok_record(2, prompt_tokens=None, completion_tokens=None, cached_prompt_tokens=None),
        ok_record(3, chunk_times=[3_001_500, 3_001_500, 3_004_500]),  # equal offsets are fine
        # refused by the server: sent and done, never a chunk
        ok_record(
            4,
            scheduled_at=t,
            sent_at=t + 10,
            first_chunk_at=None,
            first_token_at=None,
            last_token_at=None,
            done_at=t + 50,
            chunk_times=[],
            prompt_tokens=None,
            completion_tokens=None,
            cached_prompt_tokens=None,
            status="http_error",
            http_status=503,
            error_class="HTTPStatusError",
            finish_reason=None,
        ),
        # timed out mid-stream: some content arrived
        ok_record(
            5,
            scheduled_at=t,
            sent_at=t + 20,
            first_chunk_at=t + 30,
            first_token_at=t + 40,
            last_token_at=t + 60,
            done_at=t + 900,
            chunk_times=[t + 40, t + 60],
            completion_tokens=None,
            status="timeout",
            finish_reason=None,
        ),
        # cancelled before it was sent
        ok_record(
            6,
            sent_at=None,
            first_chunk_at=None,
            first_token_at=None,
            last_token_at=None,
            done_at=None,
            chunk_times=[],
            prompt_tokens=None,
            completion_tokens=None,
            cached_prompt_tokens=None,
            status="cancelled",
            finish_reason=None,
        ),
    ]


def staged(records: list[RequestRecord]) -> pa.Table:
    """The records as store.stage_run writes them (staged form 2)."""
    return to_staged(records_to_arrow(records))


def validate_requests(table: pa.Table):
    """The gate on request rows alone (no deployments or cells rows: their suites do not run)."""
    return validate_run(table, [], [])


@pytest.fixture(scope="module", autouse=True)
def warm_gx():
    """Import great_expectations (seconds) once for the whole module."""
    report = validate_requests(staged(valid_records()))
    assert report.success, report.summary_line()
    return report


def test_valid_table_passes():
    table = staged(valid_records())
    report = validate_requests(table)
    assert report.success, report.summary_line()
    assert report.failures == []
    assert report.row_count == table.num_rows
    assert report.evaluated_expectations > 30
    assert set(report.gx_result) == {"requests"}
    assert report.summary_line().startswith(f"validation passed: {table.num_rows} rows of requests, 0 of deployments")
    saved = json.loads(json.dumps(report.to_json()))  # plain JSON, full GX result inside
    assert saved["success"] is True
    assert saved["gx_result"]["requests"]["statistics"]["unsuccessful_expectations"] == 0


def test_empty_table_passes():
    assert validate_requests(to_staged(REQUEST_SCHEMA.empty_table())).success


def _dup_request_id(rs):
    rs[1].request_id = "r-0"


def _unknown_status(rs):
    rs[2].status = "exploded"


def _negative_timestamp(rs):
    rs[0].scheduled_at = -5


def _out_of_order(rs):
    rs[1].done_at = rs[1].last_token_at - 1


def _done_before_sent_with_gap(rs):
    # http_error row: no chunk timestamps between sent_at and done_at, so only a comparison
    # across the gap (done_at vs sent_at) can see it
    rs[4].done_at = rs[4].sent_at - 5


def _ok_missing_first_token(rs):
    rs[0].first_token_at = None
    rs[0].chunk_times = []  # else chunk_times_in_token_window flags the row as well


def _chunks_not_monotone(rs):
    a, b, c, d = rs[1].chunk_times
    rs[1].chunk_times = [a, c, b, d]


def _chunk_outside_window(rs):
    rs[0].chunk_times = [*rs[0].chunk_times, rs[0].last_token_at + 1_000]  # a whole µs later


def _chunk_before_window(rs):
    # r-1: sent at 1,000,100 ns (1000 µs), first token at 1,001,500 (1001 µs): a chunk at 1000 µs is not
    # before sent_at but is before the first token (a whole µs: the staged form's resolution)
    rs[1].chunk_times = [rs[1].first_token_at - 1_000, *rs[1].chunk_times]


def _max_tokens_zero(rs):
    rs[3].max_tokens = 0


def _negative_completion_tokens(rs):
    rs[0].completion_tokens = -1


def _null_run_id(rs):
    rs[6].run_id = None


def _two_bad_statuses(rs):
    rs[4].status = "weird"
    rs[5].status = "Ok"


CASES = {
    # id: (mutation, expectation, columns, condition, failing rows, example request_ids)
    "duplicate request_id": (_dup_request_id, UNIQUE, ("request_id",), None, 2, ["r-0", "r-0"]),
    "unknown status": (_unknown_status, IN_SET, ("status",), None, 1, ["r-2"]),
    "negative timestamp": (_negative_timestamp, BETWEEN, ("scheduled_at",), None, 1, ["r-0"]),
    "out-of-order timestamps": (_out_of_order, PAIR, ("done_at", "last_token_at"), None, 1, ["r-1"]),
    "done before sent, across missing points": (
        _done_before_sent_with_gap,
        PAIR,
        ("done_at", "sent_at"),
        None,
        1,
        ["r-4"],
    ),
    "ok row missing first_token_at": (
        _ok_missing_first_token,
        NOT_NULL,
        ("first_token_at",),
        "status == 'ok'",
        1,
        ["r-0"],
    ),
    "non-monotone chunk_times": (_chunks_not_monotone, IN_SET, ("chunk_times_ordered",), None, 1, ["r-1"]),
    "chunk after last_token_at": (_chunk_outside_window, IN_SET, ("chunk_times_in_token_window",), None, 1, ["r-0"]),
    "chunk before first_token_at": (_chunk_before_window, IN_SET, ("chunk_times_in_token_window",), None, 1, ["r-1"]),
    "max_tokens 0": (_max_tokens_zero, BETWEEN, ("max_tokens",), None, 1, ["r-3"]),
    "negative completion_tokens": (_negative_completion_tokens, BETWEEN, ("completion_tokens",), None, 1, ["r-0"]),
    "null run_id": (_null_run_id, NOT_NULL, ("run_id",), None, 1, ["r-6"]),
    "two bad statuses": (_two_bad_statuses, IN_SET, ("status",), None, 2, ["r-4", "r-5"]),
}


@pytest.mark.parametrize(
    "mutate, expectation, columns, condition, count, example_ids",
    list(CASES.values()),
    ids=list(CASES),
)
def test_bad_rows_fail_by_name(mutate, expectation, columns, condition, count, example_ids):
    records = valid_records()
    mutate(records)
    report = validate_requests(staged(records))

    assert not report.success
    # each mutation breaks exactly one expectation, and it is the one it should
    assert len(report.failures) == 1, report.summary_line()
    failure = report.failures[0]
    assert failure.expectation == expectation
    assert failure.columns == columns
    assert failure.condition == condition
    assert failure.unexpected_count == count
    assert failure.error is None
    assert [e["request_id"] for e in failure.examples] == example_ids

    line = report.summary_line()
    assert line.startswith("validation failed: ")
    assert "\n" not in line
    name = f"{expectation}({', '.join(columns)})"
    assert f"{name}" in line
    assert f"{count} row{'s' if count != 1 else ''}" in line
    for rid in example_ids:
        assert rid in line

    saved = json.loads(json.dumps(report.to_json()))
    assert saved["success"] is False
    assert saved["failures"][0]["expectation"] == expectation
    assert saved["failures"][0]["unexpected_count"] == count

    # The verdict: a duplicated request_id is about the table (refused whole); every other case is
    # about single rows, and exactly the failing rows are set apart, each with the expectation's name.
    if expectation == UNIQUE:
        assert report.outcome == REFUSED
        assert report.rejected == {} and report.kept_rows == 0
        assert "**The whole run is refused" in report.markdown()
        assert saved["outcome"] == "refused" and saved["failures"][0]["row_level"] is False
    else:
        assert report.outcome == FAILED_ROWS
        assert report.rejected == dict.fromkeys(example_ids, (failure.name,))
        assert report.kept_rows == len(records) - count
        assert line.startswith(
            f"validation failed: {count} of {len(records)} request rows rejected, "
            f"{len(records) - count} kept: {failure.name}: "
        )
        assert (saved["outcome"], saved["rejected_rows"], saved["kept_rows"]) == (
            "failed_rows",
            count,
            len(records) - count,
        )
        assert saved["failures"][0]["row_level"] is True


def test_examples_carry_values_and_several_failures_join_in_one_line():
    records = valid_records()
    _unknown_status(records)
    _out_of_order(records)
    report = validate_requests(staged(records))
    assert {f.name for f in report.failures} == {
        f"{IN_SET}(status)",
        f"{PAIR}(done_at, last_token_at)",
    }
    line = report.summary_line()
    assert "r-2 (status=exploded)" in line
    done, last = records[1].done_at, records[1].last_token_at
    assert f"r-1 (done_at={done}, last_token_at={last})" in line
    assert line.count(";") == 1 and "\n" not in line


def test_examples_are_capped_at_three():
    records = valid_records()
    for r in records:
        r.max_tokens = 0
    report = validate_requests(staged(records))
    (failure,) = report.failures
    assert failure.unexpected_count == len(records)
    assert len(failure.examples) == 3
    # ... but every failing row is named for the load, not only the examples
    assert sorted(report.rejected) == sorted(r.request_id for r in records)
    assert report.outcome == FAILED_ROWS and report.kept_rows == 0


def test_every_failing_row_is_named_with_every_expectation_it_failed():
    """40 rows: 12 with max_tokens 0, 5 with an unknown status, row 3 with both, row 7 with chunks out of
    order. The full lists come from GX (result_format COMPLETE), the examples stay at 3; the saved JSON
    keeps GX's examples, not the full per-row lists."""
    records = [ok_record(i) for i in range(40)]
    zero, weird = range(0, 36, 3), (3, 11, 19, 27, 35)
    for i in zero:
        records[i].max_tokens = 0
    for i in weird:
        records[i].status = "exploded"
    _chunks_not_monotone([None, records[7]])
    report = validate_requests(staged(records))

    assert report.outcome == FAILED_ROWS
    by_name = {f.name: f for f in report.failures}
    between, in_set, ordered = (f"{BETWEEN}(max_tokens)", f"{IN_SET}(status)", f"{IN_SET}(chunk_times_ordered)")
    assert set(by_name) == {between, in_set, ordered}
    assert by_name[between].unexpected_count == 12 and len(by_name[between].examples) == 3
    assert sorted(by_name[between].request_ids) == sorted(f"r-{i}" for i in zero)
    expected = {f"r-{i}": [in_set] for i in weird}  # the suite checks status before max_tokens
    for i in zero:
        expected.setdefault(f"r-{i}", []).append(between)
    expected["r-7"] = [ordered]
    assert {k: list(v) for k, v in report.rejected.items()} == expected
    assert report.rejected["r-3"] == (in_set, between)  # both, in the suite's order
    assert report.rejected["r-27"] == (in_set, between)
    assert report.kept_rows == 40 - len(expected)
    assert report.summary_line().startswith(
        f"validation failed: {len(expected)} of 40 request rows rejected, {40 - len(expected)} kept: "
    )
    text = report.markdown()
    assert f"**{len(expected)} of 40 request rows rejected, {40 - len(expected)} kept.**" in text
    assert "validation_status = 'failed_rows'" in text
    assert f"| `{between}` | 12 |" in text and f"| `{in_set}` | 5 |" in text
    saved = json.dumps(report.to_json())
    assert '"unexpected_index_list"' not in saved and '"unexpected_list"' not in saved
    assert '"partial_unexpected_index_list"' in saved  # GX's examples are kept


def test_a_table_level_failure_refuses_the_run_even_beside_row_failures():
    records = valid_records()
    _dup_request_id(records)
    _unknown_status(records)
    report = validate_requests(staged(records))
    assert report.outcome == REFUSED
    assert report.rejected == {} and report.kept_rows == 0
    assert [f.name for f in report.refusing()] == [f"{UNIQUE}(request_id)"]
    assert f"Not about single request rows: `{UNIQUE}(request_id)`" in report.markdown()
    assert report.summary_line().startswith(f"validation failed: {UNIQUE}(request_id): 2 rows")


def test_a_failing_row_without_request_id_refuses_the_run():
    records = valid_records()
    records[2].request_id = None
    report = validate_requests(staged(records))
    (failure,) = report.failures
    assert failure.name == f"{NOT_NULL}(request_id)"
    assert not failure.row_level and report.outcome == REFUSED


def test_passed_report_keeps_every_row():
    report = validate_requests(staged(valid_records()))
    assert report.outcome == PASSED
    assert report.rejected == {} and report.kept_rows == 7
    saved = report.to_json()
    assert (saved["outcome"], saved["kept_rows"], saved["rejected_rows"]) == ("passed", 7, 0)


def test_wrongly_typed_column_is_reported_as_error_not_crash():
    import pyarrow as pa

    table = staged(valid_records())
    idx = table.schema.get_field_index("max_tokens")
    table = table.set_column(idx, "max_tokens", pa.array(["64"] * table.num_rows))
    report = validate_requests(table)
    assert not report.success
    (failure,) = report.failures
    assert failure.name == f"{BETWEEN}(max_tokens)"
    assert failure.error
    assert "error:" in report.summary_line()
    assert report.outcome == REFUSED  # GX could not judge the rows: the whole run


def test_missing_column_is_a_contract_error():
    table = staged(valid_records()).drop_columns(["chunk_times"])
    with pytest.raises(ValueError, match="chunk_times"):
        validate_requests(table)


def test_requests_not_in_staged_form_are_a_contract_error():
    with pytest.raises(ValueError, match="not in staged form 2"):
        validate_requests(records_to_arrow(valid_records()))  # ns offsets, as in memory


def test_markdown_for_the_prefect_artifact_lists_each_failure():
    from tests.builders import record

    report = validate_requests(staged([record(0), record(1, chunks_ms=(10, 30, 20))]))
    text = report.markdown()
    assert text.startswith("**FAILED**")
    for failure in report.failures:
        assert f"| `{failure.name}` | {failure.unexpected_count} |" in text
    assert validate_requests(staged([record(0)])).markdown().startswith("**passed**: 1 rows")


# --- the chunk_times helper columns, on staged form 2 (µs gaps) by hand -------------------------------

from warehouse.chunk_checks import with_helper_columns  # noqa: E402


def _staged_helpers(sent, first, last, gaps):
    """The helper columns of a hand-written staged-form-2 table (only the columns they read)."""
    import pyarrow as pa

    table = pa.table(
        {
            "sent_at": pa.array(sent, pa.int64()),
            "first_token_at": pa.array(first, pa.int64()),
            "last_token_at": pa.array(last, pa.int64()),
            "chunk_times": pa.array(gaps, pa.list_(pa.int64())),
        }
    ).replace_schema_metadata({b"bakeoff.chunk_times": b"us_gaps"})
    full = table
    for name in (
        "run_id",
        "cell_id",
        "request_id",
        "prompt_id",
        "engine",
        "model",
        "deployment_id",
        "instance_id",
        "max_tokens",
        "cell_started_at",
        "scheduled_at",
        "first_chunk_at",
        "done_at",
        "prompt_tokens",
        "completion_tokens",
        "cached_prompt_tokens",
        "status",
    ):
        full = full.append_column(name, pa.nulls(table.num_rows))
    out = with_helper_columns(full)
    return (out.column("chunk_times_ordered").to_pylist(), out.column("chunk_times_in_token_window").to_pylist())


def test_helper_columns_from_us_gaps_by_hand():
    # offsets are rebuilt as sent_at // 1000 + running sum (µs) and compared with the token window // 1000
    rows = [
        # sent_at, first_token_at, last_token_at, gaps,                 ordered, in window
        (100, 1_500, 4_999, [1, 1, 1, 1], True, True),  # sent 0 µs; chunks 1..4 µs; window [1, 4]
        (100, 1_500, 4_500, [1, 1, 0, 2], True, True),  # equal offsets are fine
        (100, 1_500, 4_500, [1, 2, -1, 2], False, True),  # a step back (offsets 1, 3, 2, 4)
        (2_000, 1_000, 4_500, [-1, 1, 1], False, True),  # first chunk before sent_at: a negative first gap
        (100, 1_500, 4_500, [1, 1, 1, 1, 1], True, False),  # a chunk at 5 µs, after last_token_at (4 µs)
        (100, 2_000, 4_500, [1, 1, 1], True, False),  # a chunk at 1 µs, before first_token_at (2 µs)
        (None, 7_000, 9_000, [7, 2], True, True),  # no sent_at: offsets from the cell start
        (None, 7_000, 9_000, [8, 2], True, False),  # ... 10 µs is after 9 µs
        (100, None, 4_500, [1, 1], True, False),  # chunks while first_token_at is null
        (100, 1_500, None, [1, 1], True, False),  # ... or last_token_at
        (100, 1_500, 4_500, [1, None, 1], False, False),  # a null gap: the offsets after it are unknown
        (100, None, None, [], True, True),  # no chunks
        (100, None, None, None, True, True),  # null list
    ]
    ordered, in_window = _staged_helpers(*(list(col) for col in list(zip(*rows, strict=True))[:4]))
    assert ordered == [r[4] for r in rows]
    assert in_window == [r[5] for r in rows]


def test_chunks_within_a_microsecond_of_the_token_window_pass():
    """The gate judges chunk times at the µs resolution they are staged and stored at: a chunk 499 ns
    after last_token_at (the same µs) passes, one a whole µs after fails (CASES)."""
    records = valid_records()
    assert records[0].chunk_times[-1] == 4_500
    records[0].last_token_at = 4_001  # µs 4, as the chunk at 4_500 ns
    assert validate_requests(staged(records)).success


# --- validate_run: the deployments and cells suites, and the combined report --------------------

from tests.builders import cell_row, deployment_row  # noqa: E402

COMPOUND_UNIQUE = "expect_compound_columns_to_be_unique"


def good_deployments() -> list[dict]:
    """Three instances: started with a memory share, failed to start (with its class and the
    whole GPU), started with no memory_share key at all (a CPU engine)."""
    started = {**deployment_row(deployment_id="dep-a"), "memory_share": 0.25}
    failed = {
        **deployment_row(deployment_id="dep-b", started=False, failure_class="model_load_failed"),
        "memory_share": 1.0,
    }
    cpu = deployment_row(deployment_id="dep-c")
    assert "memory_share" not in cpu
    return [started, failed, cpu]


def good_cells() -> list[dict]:
    """Two closed-loop cells (no rate_rps key) and one open-loop cell (a rate, no concurrency)."""
    open_loop = {**cell_row("cell-c", concurrency=None), "load_kind": "open", "arrival": "poisson", "rate_rps": 2.5}
    return [cell_row("cell-a"), cell_row("cell-b", concurrency=1, planned=40), open_loop]


def _requests():
    return staged(valid_records())


def test_run_with_good_rows_passes():
    deployments, cells = good_deployments(), good_cells()
    report = validate_run(_requests(), deployments, cells)
    assert report.success, report.summary_line()
    assert report.failures == []
    assert report.table_rows == {"requests": 7, "deployments": 3, "cells": 3}
    assert report.row_count == 7
    # every suite ran: more expectations than the requests suite alone
    alone = validate_requests(_requests()).evaluated_expectations
    assert report.evaluated_expectations > alone
    assert set(report.gx_result) == {"requests", "deployments", "cells"}
    assert report.summary_line() == (
        f"validation passed: 7 rows of requests, 3 of deployments, 3 of cells, "
        f"{report.evaluated_expectations} expectations"
    )
    assert report.markdown().startswith("**passed**: 7 rows of requests, 3 of deployments")
    saved = json.loads(json.dumps(report.to_json()))
    assert saved["success"] is True
    for table in ("deployments", "cells"):
        assert saved["gx_result"][table]["statistics"]["unsuccessful_expectations"] == 0
        assert saved["gx_result"][table]["statistics"]["evaluated_expectations"] > 5


def test_run_with_empty_lists_passes():
    report = validate_run(_requests(), [], [])
    assert report.success, report.summary_line()
    assert report.table_rows == {"requests": 7, "deployments": 0, "cells": 0}
    assert set(report.gx_result) == {"requests"}  # no rows: no suite run for deployments or cells
    assert report.evaluated_expectations == report.gx_result["requests"]["statistics"]["evaluated_expectations"]
    empty = validate_run(to_staged(REQUEST_SCHEMA.empty_table()), [], [])
    assert empty.success and empty.row_count == 0


def test_run_still_checks_the_requests():
    records = valid_records()
    _unknown_status(records)
    report = validate_run(staged(records), good_deployments(), good_cells())
    assert not report.success
    (failure,) = report.failures
    assert failure.table == "requests"
    assert failure.name == f"{IN_SET}(status)"  # request failures keep their plain names
    assert report.outcome == FAILED_ROWS and report.rejected == {"r-2": (failure.name,)}


def test_a_bad_deployment_or_cell_refuses_the_run_even_with_row_failures():
    for mutate_dep, mutate_cell in ((_dep_negative_startup, None), (None, _cell_unknown_load_kind)):
        records, deployments, cells = valid_records(), good_deployments(), good_cells()
        _unknown_status(records)
        mutate_dep and mutate_dep(deployments)
        mutate_cell and mutate_cell(cells)
        report = validate_run(staged(records), deployments, cells)
        assert report.outcome == REFUSED and report.rejected == {}
        assert [f.table for f in report.refusing()] == ["deployments" if mutate_dep else "cells"]


def _dep_duplicate_key(ds):
    ds[2]["instance_id"] = ds[0]["instance_id"]


def _dep_null_engine(ds):
    ds[1]["engine"] = None


def _dep_missing_launcher_key(ds):
    del ds[0]["launcher"]


def _dep_null_run_id(ds):
    ds[2]["run_id"] = None


def _dep_null_started(ds):
    ds[0]["started"] = None


def _dep_started_not_a_bool(ds):
    ds[2]["started"] = "yes"


def _dep_failed_without_class(ds):
    ds[1]["failure_class"] = None


def _dep_negative_startup(ds):
    ds[0]["startup_s"] = -0.5


def _dep_memory_share_zero(ds):
    ds[0]["memory_share"] = 0.0


def _dep_memory_share_over_one(ds):
    ds[1]["memory_share"] = 1.5
    ds[2]["memory_share"] = 2


DEPLOYMENT_CASES = {
    # id: (mutation, expectation, columns, condition, failing rows, example instance_ids)
    "duplicate (run_id, instance_id)": (
        _dep_duplicate_key,
        COMPOUND_UNIQUE,
        ("run_id", "instance_id"),
        None,
        2,
        ["dep-a-0", "dep-a-0"],
    ),
    "null engine": (_dep_null_engine, NOT_NULL, ("engine",), None, 1, ["dep-b-0"]),
    "launcher key missing": (_dep_missing_launcher_key, NOT_NULL, ("launcher",), None, 1, ["dep-a-0"]),
    "null run_id": (_dep_null_run_id, NOT_NULL, ("run_id",), None, 1, ["dep-c-0"]),
    "null started": (_dep_null_started, NOT_NULL, ("started",), None, 1, ["dep-a-0"]),
    "started not a boolean": (_dep_started_not_a_bool, IN_SET, ("started",), None, 1, ["dep-c-0"]),
    "did not start, no failure_class": (
        _dep_failed_without_class,
        NOT_NULL,
        ("failure_class",),
        "started == False",
        1,
        ["dep-b-0"],
    ),
    "negative startup_s": (_dep_negative_startup, BETWEEN, ("startup_s",), None, 1, ["dep-a-0"]),
    "memory_share 0": (_dep_memory_share_zero, BETWEEN, ("memory_share",), None, 1, ["dep-a-0"]),
    "memory_share over 1": (_dep_memory_share_over_one, BETWEEN, ("memory_share",), None, 2, ["dep-b-0", "dep-c-0"]),
}


def _cell_duplicate_key(cs):
    cs[1]["cell_id"] = "cell-a"


def _cell_null_workload(cs):
    cs[2]["workload_id"] = None


def _cell_missing_deployment_key(cs):
    del cs[1]["deployment_id"]


def _cell_null_instance(cs):
    cs[0]["instance_id"] = None


def _cell_null_load_kind(cs):
    cs[0]["load_kind"] = None


def _cell_unknown_load_kind(cs):
    cs[1]["load_kind"] = "burst"


def _cell_negative_wall(cs):
    cs[2]["wall_ns"] = -1


def _cell_negative_planned(cs):
    cs[0]["requests_planned"] = -3


def _cell_concurrency_zero(cs):
    cs[0]["concurrency"] = 0
    cs[1]["concurrency"] = -1


def _cell_rate_zero(cs):
    cs[2]["rate_rps"] = 0.0


CELL_CASES = {
    # id: (mutation, expectation, columns, condition, failing rows, example cell_ids)
    "duplicate (run_id, cell_id)": (
        _cell_duplicate_key,
        COMPOUND_UNIQUE,
        ("run_id", "cell_id"),
        None,
        2,
        ["cell-a", "cell-a"],
    ),
    "null workload_id": (_cell_null_workload, NOT_NULL, ("workload_id",), None, 1, ["cell-c"]),
    "deployment_id key missing": (_cell_missing_deployment_key, NOT_NULL, ("deployment_id",), None, 1, ["cell-b"]),
    "null instance_id": (_cell_null_instance, NOT_NULL, ("instance_id",), None, 1, ["cell-a"]),
    "null load_kind": (_cell_null_load_kind, NOT_NULL, ("load_kind",), None, 1, ["cell-a"]),
    "unknown load_kind": (_cell_unknown_load_kind, IN_SET, ("load_kind",), None, 1, ["cell-b"]),
    "negative wall_ns": (_cell_negative_wall, BETWEEN, ("wall_ns",), None, 1, ["cell-c"]),
    "negative requests_planned": (_cell_negative_planned, BETWEEN, ("requests_planned",), None, 1, ["cell-a"]),
    "concurrency below 1": (_cell_concurrency_zero, BETWEEN, ("concurrency",), None, 2, ["cell-a", "cell-b"]),
    "rate_rps 0": (_cell_rate_zero, BETWEEN, ("rate_rps",), None, 1, ["cell-c"]),
}


def _check_single_failure(report, table, expectation, columns, condition, count, example_ids):
    assert not report.success
    assert len(report.failures) == 1, report.summary_line()
    failure = report.failures[0]
    assert failure.table == table
    assert failure.expectation == expectation
    assert failure.columns == columns
    assert failure.condition == condition
    assert failure.unexpected_count == count
    assert failure.error is None
    key = "instance_id" if table == "deployments" else "cell_id"
    assert [e[key] for e in failure.examples] == example_ids

    name = f"{table}.{expectation}({', '.join(columns)})"
    assert failure.name == (f"{name} where {condition}" if condition else name)
    line = report.summary_line()
    assert line.startswith(f"validation failed: {failure.name}: {count} row{'s' if count != 1 else ''}, e.g. ")
    assert "\n" not in line
    for example in example_ids:
        assert example in line
    assert f"| `{failure.name}` | {count} |" in report.markdown()
    saved = json.loads(json.dumps(report.to_json()))
    assert saved["failures"][0]["table"] == table
    assert saved["failures"][0]["expectation"] == expectation
    assert saved["failures"][0]["unexpected_count"] == count


@pytest.mark.parametrize(
    "mutate, expectation, columns, condition, count, example_ids",
    list(DEPLOYMENT_CASES.values()),
    ids=list(DEPLOYMENT_CASES),
)
def test_bad_deployment_rows_fail_by_name(mutate, expectation, columns, condition, count, example_ids):
    deployments = good_deployments()
    mutate(deployments)
    report = validate_run(_requests(), deployments, good_cells())
    _check_single_failure(report, "deployments", expectation, columns, condition, count, example_ids)


@pytest.mark.parametrize(
    "mutate, expectation, columns, condition, count, example_ids",
    list(CELL_CASES.values()),
    ids=list(CELL_CASES),
)
def test_bad_cell_rows_fail_by_name(mutate, expectation, columns, condition, count, example_ids):
    cells = good_cells()
    mutate(cells)
    report = validate_run(_requests(), good_deployments(), cells)
    _check_single_failure(report, "cells", expectation, columns, condition, count, example_ids)


def test_combined_summary_names_every_failing_table():
    records = valid_records()
    _max_tokens_zero(records)
    deployments, cells = good_deployments(), good_cells()
    _dep_negative_startup(deployments)
    _cell_unknown_load_kind(cells)
    report = validate_run(staged(records), deployments, cells)
    assert not report.success
    assert [f.table for f in report.failures] == ["requests", "deployments", "cells"]
    line = report.summary_line()
    assert "\n" not in line and line.count("; ") == 2
    assert f"{BETWEEN}(max_tokens): 1 row, e.g. r-3" in line
    assert f"deployments.{BETWEEN}(startup_s): 1 row, e.g. dep-a-0 (startup_s=-0.5)" in line
    assert f"cells.{IN_SET}(load_kind): 1 row, e.g. cell-b (load_kind=burst)" in line
    text = report.markdown()
    assert text.startswith("**FAILED**: 7 rows of requests, 3 of deployments, 3 of cells")
    for failure in report.failures:
        assert f"| `{failure.name}` | 1 |" in text


def test_only_bad_row_tables_fail_with_both_named():
    deployments, cells = good_deployments(), good_cells()
    _dep_failed_without_class(deployments)
    _cell_negative_wall(cells)
    report = validate_run(_requests(), deployments, cells)
    line = report.summary_line()
    assert "deployments." in line and "cells." in line
    assert {f.table for f in report.failures} == {"deployments", "cells"}


def test_a_value_of_the_wrong_type_is_reported_not_a_crash():
    deployments = good_deployments()
    deployments[0]["memory_share"] = "half"  # Arrow cannot type this column: GX judges the values
    report = validate_run(_requests(), deployments, good_cells())
    assert not report.success
    (failure,) = report.failures
    assert failure.table == "deployments"
    assert failure.name == f"deployments.{BETWEEN}(memory_share)"
    assert failure.error and failure.unexpected_count == 0  # GX could not compare "half" with the bounds
    assert report.outcome == REFUSED and "error:" in report.summary_line()
