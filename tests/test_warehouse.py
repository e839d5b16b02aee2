"""The warehouse: schema and migrations, idempotent loads, all-or-nothing loads, busy writers."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.builders import cell_row, deployment_row, host_sample, record, run_row, stage
from warehouse import schema, store
from warehouse.schema import LATEST, current_version

ROOT = Path(__file__).resolve().parent.parent


def counts(con, run_id="run-1") -> dict[str, int]:
    return {
        t: con.execute(f"SELECT count(*) FROM {t} WHERE run_id = ?", [run_id]).fetchone()[0]
        for t in (*store.TABLES_IN_LOAD_ORDER, store.REJECTED)
    }


def test_fresh_file_is_at_latest_schema_with_views(warehouse):
    assert current_version(warehouse) == LATEST
    views = {r[0] for r in warehouse.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    assert {"v_requests", "v_cells"} <= views


def test_reopening_does_not_migrate_twice(warehouse_path):
    store.connect(warehouse_path).close()
    con = store.connect(warehouse_path)
    assert con.execute("SELECT count(*) FROM schema_version").fetchone()[0] == LATEST
    con.close()


def test_newer_schema_is_refused(warehouse_path):
    con = store.connect(warehouse_path)
    con.execute("INSERT INTO schema_version (version) VALUES (?)", [LATEST + 1])
    con.close()
    with pytest.raises(schema.SchemaTooNew, match="newer than this bakeoff knows"):
        store.connect(warehouse_path)
    with pytest.raises(schema.SchemaTooNew, match="upgrade bakeoff"):  # readers too: they would misread it
        store.connect(warehouse_path, read_only=True)


def test_loading_twice_leaves_the_same_rows(tmp_path, warehouse):
    run_dir = stage(tmp_path, [record(i) for i in range(5)], [cell_row()], host_samples=[host_sample(), host_sample()])
    first = store.load_run(warehouse, run_dir)
    snapshot = warehouse.execute("SELECT * FROM requests ORDER BY request_id").fetchall()
    second = store.load_run(warehouse, run_dir)
    assert (
        first
        == second
        == {
            "runs": 1,
            "builds": 0,
            "deployments": 1,
            "cells": 1,
            "requests": 5,
            "gpu_samples": 0,
            "engine_metrics": 0,
            "host_samples": 2,
            "rejected_requests": 0,
        }
    )
    assert warehouse.execute("SELECT * FROM requests ORDER BY request_id").fetchall() == snapshot
    assert counts(warehouse) == first


def test_other_runs_are_untouched_by_a_reload(tmp_path, warehouse):
    store.load_run(
        warehouse,
        stage(
            tmp_path,
            [record(0, run_id="run-a")],
            [cell_row(run_id="run-a")],
            run_row("run-a"),
            [deployment_row("run-a")],
        ),
    )
    store.load_run(
        warehouse,
        stage(
            tmp_path,
            [record(0, run_id="run-b")],
            [cell_row(run_id="run-b")],
            run_row("run-b"),
            [deployment_row("run-b")],
        ),
    )
    assert counts(warehouse, "run-a")["requests"] == counts(warehouse, "run-b")["requests"] == 1


def test_a_bad_row_loads_nothing_of_the_run(tmp_path, warehouse):
    good = stage(tmp_path, [record(i) for i in range(3)], [cell_row()])
    store.load_run(warehouse, good)
    before = warehouse.execute("SELECT * FROM requests ORDER BY request_id").fetchall()
    bad = record(9, status="weird")  # the CHECK on status rejects it
    bad_dir = stage(tmp_path / "again", [record(i) for i in range(4)] + [bad], [cell_row()])
    with pytest.raises(store.WarehouseError, match="violates a warehouse constraint"):
        store.load_run(warehouse, bad_dir)
    assert warehouse.execute("SELECT * FROM requests ORDER BY request_id").fetchall() == before


def test_failed_deployment_row_needs_a_failure_class(tmp_path, warehouse):
    run_dir = stage(tmp_path, [], [], deployments=[deployment_row(started=False)])
    with pytest.raises(store.WarehouseError, match="constraint"):
        store.load_run(warehouse, run_dir)
    assert warehouse.execute("SELECT count(*) FROM runs").fetchone()[0] == 0


def test_rows_of_another_run_are_refused(tmp_path, warehouse):
    run_dir = stage(tmp_path, [record(0, run_id="run-x")], [cell_row()], run_row("run-1"))
    with pytest.raises(store.WarehouseError, match="belong to another run"):
        store.load_run(warehouse, run_dir)


def test_not_a_staged_run(tmp_path, warehouse):
    with pytest.raises(store.WarehouseError, match="not a staged run"):
        store.load_run(warehouse, tmp_path)


@pytest.mark.parametrize("stop_signal", ["SIGKILL", "SIGTERM", "SIGINT"])
def test_kill_9_mid_load_leaves_the_previous_state(tmp_path, warehouse_path, stop_signal):
    """A real subprocess loads a run and is killed (SIGKILL), terminated (SIGTERM, as the CLI takes it) or
    interrupted (Ctrl-C) inside the load's transaction, after every row of the new run was inserted and
    before COMMIT; the file keeps the old state. The subprocess says when it got there (a wrapper around
    the requests insert), so the signal does not depend on how fast the machine loads."""
    con = store.connect(warehouse_path)
    store.load_run(con, stage(tmp_path / "small", [record(i) for i in range(3)], [cell_row()]))
    before = counts(con)
    con.close()
    big = [record(i, chunks_ms=tuple(range(1, 200))) for i in range(20_000)]
    big_dir = stage(tmp_path / "big", big, [cell_row()])
    script = textwrap.dedent(f"""
        import sys, time; sys.path.insert(0, {str(ROOT)!r})
        from flows.environment import sigterm_exits
        from warehouse import store
        sigterm_exits()
        insert = store._insert_requests
        def insert_then_wait(con, path):
            insert(con, path)
            n = con.execute("SELECT count(*) FROM requests").fetchall()[0][0]
            print("inserted", n, flush=True)
            time.sleep(120)
        store._insert_requests = insert_then_wait
        con = store.connect({str(warehouse_path)!r})
        store.load_run(con, {str(big_dir)!r})
        print("loaded", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        # the new run's rows are in (visible inside its transaction), the commit has not happened
        assert proc.stdout.readline().split() == ["inserted", str(len(big))]
        assert proc.poll() is None
    finally:
        proc.send_signal(getattr(signal, stop_signal))
        proc.wait(60)
    assert proc.returncode != 0 and "loaded" not in proc.stdout.read()
    con = store.connect(warehouse_path)
    assert counts(con) == before, "a stopped load must leave the previous state"
    con.close()


def test_second_writer_gets_a_busy_message(warehouse_path):
    store.connect(warehouse_path).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb,time; c=duckdb.connect({str(warehouse_path)!r}); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(store.WarehouseBusy) as err:
            store.connect(warehouse_path)
        assert f"PID {holder.pid}" in str(err.value)
        assert "busy" in str(err.value) and "\n" not in str(err.value)
        with pytest.raises(store.WarehouseBusy):
            store.connect(warehouse_path, read_only=True)
    finally:
        holder.kill()
        holder.wait()


def _reader(path: Path, hold_s: float) -> subprocess.Popen:
    """A real reader (what `bakeoff sql` or a notebook is): the file open read-only for hold_s."""
    code = (
        f"import duckdb,time; c=duckdb.connect({str(path)!r}, read_only=True); c.sql('select 1'); "
        f"print('held', flush=True); time.sleep({hold_s})"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_load_waits_for_a_reader_to_close_the_warehouse(tmp_path, warehouse_path, monkeypatch):
    from tests.builders import cell_row, record, stage

    store.connect(warehouse_path).close()
    run_dir = stage(tmp_path, [record(i) for i in range(3)], [cell_row()])
    holder = _reader(warehouse_path, 3)
    try:
        assert holder.poll() is None  # the reader still has the file open as the load starts
        _verdict, counts = store.gate_and_load(warehouse_path, run_dir)
    finally:
        holder.kill()
        holder.wait()
    assert counts["requests"] == 3


def test_a_reader_that_never_closes_fails_the_load_naming_it(tmp_path, warehouse_path, monkeypatch):
    from tests.builders import cell_row, record, stage

    store.connect(warehouse_path).close()
    run_dir = stage(tmp_path, [record(i) for i in range(3)], [cell_row()])
    monkeypatch.setenv("BAKEOFF_LOAD_WAIT_S", "1")
    holder = _reader(warehouse_path, 60)
    try:
        with pytest.raises(store.WarehouseBusy) as err:
            store.gate_and_load(warehouse_path, run_dir)
    finally:
        holder.kill()
        holder.wait()
    message = str(err.value)
    assert f"is busy: PID {holder.pid} (" in message and "writing" not in message, message
    assert (run_dir / "run.json").is_file()  # still staged: `bakeoff load RUN_DIR` later loses nothing


def test_read_only_open_of_a_missing_file(tmp_path):
    with pytest.raises(store.WarehouseError, match="does not exist yet"):
        store.connect(tmp_path / "none.duckdb", read_only=True)


def test_bakeoff_load_gates_a_staged_run_through_validation(tmp_path, warehouse_path):
    """`bakeoff load RUN_DIR`: a staged run with a bad row loads the rest, sets the bad row apart, marks
    the run and exits 1 naming the expectation; a duplicated request_id refuses the whole run; a good run
    loads and exits 0."""
    import os

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cli = [sys.executable, "-m", "flows.cli", "load", "--warehouse", str(warehouse_path)]
    dup = [record(i, run_id="run-dup") for i in range(3)]
    dup[2].request_id = dup[0].request_id
    dup_dir = stage(
        tmp_path / "dup", dup, [cell_row(run_id="run-dup")], run_row("run-dup"), [deployment_row("run-dup")]
    )
    result = subprocess.run([*cli, str(dup_dir)], capture_output=True, text=True, timeout=180, env=env)
    assert result.returncode == 1
    assert "expect_column_values_to_be_unique(request_id): 2 rows" in result.stderr
    assert "nothing loaded" in result.stderr and "Traceback" not in result.stderr
    if warehouse_path.exists():
        with store.opened(warehouse_path, read_only=True) as con:
            assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 0

    bad = record(1, chunks_ms=(10, 30, 20))  # a chunk time that goes backwards: only GX sees this
    bad_dir = stage(tmp_path / "bad", [record(0), bad, record(2)], [cell_row()])
    result = subprocess.run([*cli, str(bad_dir)], capture_output=True, text=True, timeout=180, env=env)
    assert result.returncode == 1
    err = result.stderr.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith(
        "bakeoff: validation failed: 1 of 3 request rows rejected, 2 kept: "
        "expect_column_values_to_be_in_set(chunk_times_ordered): 1 row, e.g. cell-a#1"
    )
    assert "marked validation_status = 'failed_rows'" in err
    assert "requests: 2" in result.stdout and "rejected_requests: 1" in result.stdout
    with store.opened(warehouse_path, read_only=True) as con:
        assert counts(con)["requests"] == 2 and counts(con)["rejected_requests"] == 1
        assert con.execute("SELECT validation_status FROM runs").fetchall() == [("failed_rows",)]

    good_dir = stage(tmp_path / "good", [record(0), record(1)], [cell_row()])
    result = subprocess.run([*cli, str(good_dir)], capture_output=True, text=True, timeout=180, env=env)
    assert result.returncode == 0, result.stderr
    assert "requests: 2" in result.stdout and "rejected_requests: 0" in result.stdout
    with store.opened(warehouse_path, read_only=True) as con:  # the same run_id, now clean
        assert counts(con)["rejected_requests"] == 0
        assert con.execute("SELECT validation_status FROM runs").fetchall() == [("passed",)]


# ---------------------------------------------------------------- rows the validation gate rejects


def _bad_rows_run(tmp_path, run_id="run-1"):
    """8 requests of one cell, 4 of them bad in different ways; the real gate's verdict on them."""
    from tasks.records import records_to_arrow
    from warehouse.chunks import to_staged
    from warehouse.validate import validate_run

    records = [record(i, run_id=run_id) for i in range(8)]
    records[1].status = "weird"  # a CHECK would refuse the whole run without the gate
    records[3].chunk_times = records[3].chunk_times[::-1]  # only GX sees this (a helper column)
    records[5].max_tokens = 0  # CHECK too
    records[6].status = "exploded"  # two expectations on one row:
    records[6].scheduled_at = -1  # status and scheduled_at >= 0
    cells, deployments = [cell_row(run_id=run_id)], [deployment_row(run_id)]
    run_dir = stage(tmp_path, records, cells, run_row(run_id), deployments)
    verdict = validate_run(to_staged(records_to_arrow(records)), deployments, cells)  # as stage_run writes them
    return run_dir, verdict, records


IN_SET = "expect_column_values_to_be_in_set"
BETWEEN = "expect_column_values_to_be_between"


def test_rows_failing_the_gate_go_to_rejected_requests_and_the_run_is_marked(tmp_path, warehouse):
    import json

    run_dir, verdict, records = _bad_rows_run(tmp_path)
    assert verdict.outcome == "failed_rows", verdict.summary_line()

    loaded = store.load_run(warehouse, run_dir, verdict)
    assert loaded == {
        "runs": 1,
        "builds": 0,
        "deployments": 1,
        "cells": 1,
        "requests": 4,
        "gpu_samples": 0,
        "host_samples": 0,
        "engine_metrics": 0,
        "rejected_requests": 4,
    }
    kept = [r[0] for r in warehouse.execute("SELECT request_id FROM requests ORDER BY ALL").fetchall()]
    assert kept == ["cell-a#0", "cell-a#2", "cell-a#4", "cell-a#7"]
    rejected = dict(
        warehouse.execute(
            "SELECT request_id, failed_expectations FROM rejected_requests WHERE run_id = 'run-1'"
        ).fetchall()
    )
    assert rejected == {
        "cell-a#1": [f"{IN_SET}(status)"],
        "cell-a#3": [f"{IN_SET}(chunk_times_ordered)"],
        "cell-a#5": [f"{BETWEEN}(max_tokens)"],
        "cell-a#6": [f"{IN_SET}(status)", f"{BETWEEN}(scheduled_at)"],
    }
    # the whole staged row, as staged (staged form 2: µs gaps, here 30 ms then two steps back), nothing lost
    record_json = json.loads(
        warehouse.execute("SELECT record FROM rejected_requests WHERE request_id = 'cell-a#3'").fetchall()[0][0]
    )
    assert records[3].chunk_times == [30_000_000, 20_000_000, 10_000_000] and records[3].sent_at == 0
    assert record_json["chunk_times"] == [30_000, -10_000, -10_000]
    assert (record_json["run_id"], record_json["status"], record_json["prompt_id"]) == ("run-1", "ok", "p3")
    assert record_json.keys() >= {"sent_at", "first_token_at", "cell_started_at", "finish_reason", "http_status"}
    status, saved = warehouse.execute("SELECT validation_status, validation FROM runs").fetchall()[0]
    assert status == "failed_rows"
    saved = json.loads(saved)
    assert (saved["outcome"], saved["kept_rows"], saved["rejected_rows"]) == ("failed_rows", 4, 4)

    # loading again (same verdict) changes nothing
    snapshot = {
        t: warehouse.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall()
        for t in ("runs", "requests", "rejected_requests", "cells")
    }
    assert store.load_run(warehouse, run_dir, verdict) == loaded
    assert {t: warehouse.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in snapshot} == snapshot


def test_a_clean_reload_of_a_marked_run_clears_its_rejected_rows(tmp_path, warehouse):
    """The rows of a run are replaced as a whole, rejected ones included: the run staged again with
    good rows (e.g. fixed by hand) and a passing verdict leaves nothing rejected."""
    from tasks.records import records_to_arrow
    from warehouse.chunks import to_staged
    from warehouse.validate import validate_run

    run_dir, verdict, _ = _bad_rows_run(tmp_path / "bad")
    store.load_run(warehouse, run_dir, verdict)
    other_dir, other_verdict, _ = _bad_rows_run(tmp_path / "other", run_id="run-2")
    store.load_run(warehouse, other_dir, other_verdict)

    good = [record(i) for i in range(8)]
    good_dir = stage(tmp_path / "good", good, [cell_row()])
    passed = validate_run(to_staged(records_to_arrow(good)), [deployment_row()], [cell_row()])
    assert store.load_run(warehouse, good_dir, passed)["rejected_requests"] == 0
    assert counts(warehouse)["requests"] == 8 and counts(warehouse)["rejected_requests"] == 0
    assert warehouse.execute("SELECT run_id, validation_status FROM runs ORDER BY ALL").fetchall() == [
        ("run-1", "passed"),
        ("run-2", "failed_rows"),
    ]
    assert counts(warehouse, "run-2")["rejected_requests"] == 4  # another run's rows are untouched


def test_a_refused_verdict_loads_nothing_and_keeps_the_previous_state(tmp_path, warehouse):
    """A duplicated request_id is not about one row: the whole run is refused, as before."""
    from tasks.records import records_to_arrow
    from warehouse.chunks import to_staged
    from warehouse.validate import validate_run

    store.load_run(warehouse, stage(tmp_path / "before", [record(i) for i in range(3)], [cell_row()]))
    before = {t: warehouse.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in ("runs", "requests")}
    records = [record(i) for i in range(5)]
    records[4].request_id = records[0].request_id
    records[2].status = "weird"  # a row-level failure beside it does not make the run loadable
    run_dir = stage(tmp_path / "dup", records, [cell_row()])
    verdict = validate_run(to_staged(records_to_arrow(records)), [deployment_row()], [cell_row()])
    assert verdict.outcome == "refused"
    with pytest.raises(store.WarehouseError, match="refused by the validation gate, nothing loaded") as err:
        store.load_run(warehouse, run_dir, verdict)
    assert "expect_column_values_to_be_unique(request_id)" in str(err.value) and "\n" not in str(err.value)
    assert {t: warehouse.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in before} == before
    assert counts(warehouse)["rejected_requests"] == 0


def test_a_verdict_that_does_not_match_the_staged_rows_rolls_back(tmp_path, warehouse):
    run_dir, verdict, _ = _bad_rows_run(tmp_path)
    verdict.rejected["cell-a#99"] = ("expect_column_values_to_be_in_set(status)",)  # not in the file
    with pytest.raises(store.WarehouseError, match="rejects 5 request rows, 4 of them are in the staged file"):
        store.load_run(warehouse, run_dir, verdict)
    assert warehouse.execute("SELECT count(*) FROM runs").fetchone()[0] == 0
    assert counts(warehouse)["rejected_requests"] == 0


def test_without_a_verdict_the_saved_validation_decides(tmp_path, warehouse):
    """No verdict: a saved report that passed marks the run 'passed', none leaves NULL, and one that did
    not pass is refused (only a verdict says which rows to set apart)."""
    run_dir, verdict, _ = _bad_rows_run(tmp_path / "failed")
    run = store.read_staged_run(run_dir)
    (run_dir / "run.json").write_text(__import__("json").dumps({**run, "validation": verdict.to_json()}))
    with pytest.raises(store.WarehouseError, match="saved validation did not pass; load it with `bakeoff load"):
        store.load_run(warehouse, run_dir)
    assert warehouse.execute("SELECT count(*) FROM runs").fetchone()[0] == 0

    store.load_run(warehouse, stage(tmp_path / "none", [record(0)], [cell_row()]))
    assert warehouse.execute("SELECT validation_status FROM runs").fetchall() == [(None,)]
    passed = run_row()
    passed["validation"] = {"success": True, "summary": "validation passed: 1 rows, 40 expectations"}
    store.load_run(warehouse, stage(tmp_path / "passed", [record(0)], [cell_row()], passed))
    assert warehouse.execute("SELECT validation_status FROM runs").fetchall() == [("passed",)]


def test_gate_and_load_judges_the_staged_rows_and_loads_with_the_verdict(tmp_path):
    """store.gate_and_load (the nightly flow's and `bakeoff load`'s one path): a run with a bad row is
    loaded without it, marked, its verdict saved in run.json; a refused run loads nothing and a
    warehouse given as a path is not even created."""
    import json

    run_dir, _, _ = _bad_rows_run(tmp_path / "bad")
    path = tmp_path / "wh.duckdb"
    verdict, loaded = store.gate_and_load(path, run_dir)
    assert verdict.outcome == "failed_rows" and sorted(verdict.rejected) == [
        "cell-a#1",
        "cell-a#3",
        "cell-a#5",
        "cell-a#6",
    ]
    assert (loaded["requests"], loaded["rejected_requests"]) == (4, 4)
    assert json.loads((run_dir / "run.json").read_text())["validation"]["outcome"] == "failed_rows"
    with store.opened(path, read_only=True) as con:
        assert con.execute("SELECT validation_status FROM runs").fetchall() == [("failed_rows",)]

    dup = [record(i, run_id="run-dup") for i in range(3)]
    dup[2].request_id = dup[0].request_id
    dup_dir = stage(
        tmp_path / "dup", dup, [cell_row(run_id="run-dup")], run_row("run-dup"), [deployment_row("run-dup")]
    )
    never = tmp_path / "never.duckdb"
    verdict, loaded = store.gate_and_load(never, dup_dir)
    assert verdict.outcome == "refused" and loaded == {} and not never.exists()
    assert json.loads((dup_dir / "run.json").read_text())["validation"]["outcome"] == "refused"
