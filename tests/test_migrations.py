"""Migrations: a warehouse file from every earlier schema version opens at the latest one, with its data.

For each version v < LATEST: build a file at v (schema.migrate(target=v)), insert rows with the
columns that version has, close it, open it with store.connect (which migrates), and check that the
schema is the latest, the views answer, and every row and value survived (chunk lists converted by
migration 0003 from ns offsets to µs gaps).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools

import duckdb
import pytest

from tests.builders import T0, cell_row, deployment_row, host_sample, record, run_row
from warehouse import schema, store
from warehouse.schema import LATEST, current_version

MS = 1_000_000


def _columns(con, table: str) -> dict[str, str]:
    return dict(
        con.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ? AND table_schema = 'main'",
            [table],
        ).fetchall()
    )


def _insert(con, table: str, rows: list[dict]) -> None:
    """Insert the fields of `rows` that the table has at this schema version."""
    have = _columns(con, table)
    for row in rows:
        names = [k for k in row if k in have]
        con.execute(
            f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)})",
            [row[k] for k in names],
        )


# Two requests with hand-written timings: sent at 5.5 ms, chunks at 10.0, 21.999 and 30.0 ms, and a
# timeout without chunks. In µs from sent_at, then from the chunk before: 10000 - 5500, 21999 - 10000,
# 30000 - 21999.
SENT_NS = 5_500_000
CHUNKS_NS = [10_000_000, 21_999_000, 30_000_000]
EXPECTED_GAPS_US = [4_500, 11_999, 8_001]


def _old_rows() -> dict[str, list[dict]]:
    ok = record(0, sent_ms=5.5, chunks_ms=(10, 21.999, 30), tokens=3)
    timeout = record(1, chunks_ms=(), tokens=None, status="timeout", error_class="ReadTimeout")
    requests = [{f.name: getattr(rec, f.name) for f in dataclasses.fields(rec)} for rec in (ok, timeout)]
    run = run_row(ttft_ms=25)
    run["started_at"] = T0
    run["finished_at"] = T0 + dt.timedelta(minutes=5)
    return {
        "runs": [run],
        "deployments": [deployment_row()],
        "cells": [cell_row("cell-a", wall_ms=200)],
        "requests": requests,
        "host_samples": [host_sample()],
    }


def _stored_chunks(con, rows: list[dict]) -> list[dict]:
    """Requests rows as this version stores them (ns offsets before migration 0003, µs gaps after)."""
    if _columns(con, "requests")["chunk_times"] == "BIGINT[]":
        return rows
    out = []
    for row in rows:
        base = (row["sent_at"] or 0) // 1000
        us = [c // 1000 for c in row["chunk_times"]]
        out.append({**row, "chunk_times": [u - p for p, u in itertools.pairwise([base, *us])]})
    return out


@pytest.mark.parametrize("version", range(LATEST))
def test_every_earlier_version_migrates_to_the_latest_with_its_data(warehouse_path, version):
    con = duckdb.connect(str(warehouse_path))
    assert schema.migrate(con, target=version) == version
    rows = _old_rows()
    if version > 0:
        for table in ("runs", "deployments", "cells", "host_samples"):
            _insert(con, table, rows[table])
        _insert(con, "requests", _stored_chunks(con, rows["requests"]))
        before = {t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in rows}
        assert before == {t: len(r) for t, r in rows.items()}
    con.close()

    con = store.connect(warehouse_path)
    try:
        assert current_version(con) == LATEST
        assert con.execute("SELECT list(version ORDER BY version) FROM schema_version").fetchall()[0][0] == list(
            range(1, LATEST + 1)
        )
        views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
        assert {"v_requests", "v_cells", "v_nightly", "v_comparison"} <= views
        assert _columns(con, "requests")["chunk_times"] == "INTEGER[]"
        if version == 0:
            assert con.execute("SELECT count(*) FROM requests").fetchall()[0][0] == 0
            return
        for table, expected in rows.items():
            assert con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0] == len(expected), table
        got = con.execute(
            "SELECT request_id, status, sent_at, first_token_at, last_token_at, completion_tokens, chunk_times "
            "FROM requests ORDER BY request_id"
        ).fetchall()
        assert got == [
            ("cell-a#0", "ok", SENT_NS, CHUNKS_NS[0], CHUNKS_NS[-1], 3, EXPECTED_GAPS_US),
            ("cell-a#1", "timeout", 0, None, None, None, []),
        ]
        # The metrics read the same through the views after the conversion.
        ttft, itl = con.execute("SELECT ttft_ms, itl_ms FROM v_requests WHERE request_id = 'cell-a#0'").fetchall()[0]
        assert ttft == pytest.approx(4.5)
        assert itl == pytest.approx([11.999, 8.001])
        cell = con.execute("SELECT requests, ok, failed, wall_s, goodput_rps FROM v_cells").fetchall()
        assert cell == [(2, 1, 1, 0.2, pytest.approx(1 / 0.2))]
        assert con.execute("SELECT status, slo_ttft_ms FROM runs").fetchall() == [("completed", 25.0)]
        # migration 0004: no verdict stored for this run (validation NULL), nothing rejected yet
        assert con.execute("SELECT validation_status FROM runs").fetchall() == [(None,)]
        assert con.execute("SELECT count(*) FROM rejected_requests").fetchall() == [(0,)]
        assert con.execute("SELECT started, flags FROM deployments").fetchall() == [(True, ["--parallel", "2"])]
        assert con.execute("SELECT cpu_util_pct FROM host_samples").fetchall() == [(50.0,)]
    finally:
        con.close()


def test_0004_marks_the_runs_the_gate_passed_and_keeps_the_others_unmarked(warehouse_path):
    """Before 0004 a run was loaded only if the gate passed it whole: a stored report that says so
    becomes 'passed'; no report, or one that does not say it passed, stays NULL (no verdict)."""
    import json

    con = duckdb.connect(str(warehouse_path))
    schema.migrate(con, target=3)
    reports = {
        "run-passed": {"success": True, "summary": "validation passed: 2 rows, 40 expectations"},
        "run-failed": {"success": False, "summary": "validation failed: ..."},
        "run-none": None,
    }
    for run_id, report in reports.items():
        _insert(
            con,
            "runs",
            [{**run_row(run_id), "started_at": T0, "validation": json.dumps(report) if report is not None else None}],
        )
    con.close()

    con = store.connect(warehouse_path)
    try:
        got = dict(con.execute("SELECT run_id, validation_status FROM runs").fetchall())
        assert got == {"run-passed": "passed", "run-failed": None, "run-none": None}
        # the report itself is kept as it was
        stored = con.execute("SELECT validation FROM runs WHERE run_id = 'run-passed'").fetchall()[0][0]
        assert json.loads(stored) == reports["run-passed"]
        assert _columns(con, "rejected_requests") == {
            "run_id": "VARCHAR",
            "request_id": "VARCHAR",
            "failed_expectations": "VARCHAR[]",
            "record": "JSON",
        }
    finally:
        con.close()


def test_a_migration_that_fails_leaves_the_previous_version(warehouse_path, tmp_path, monkeypatch):
    """Each migration is one transaction: a broken next migration changes nothing, and says so."""
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    for _number, path in schema.migrations():
        (migrations / path.name).write_text(path.read_text())
    broken = migrations / f"{LATEST + 1:04d}_broken.sql"
    broken.write_text("ALTER TABLE cells ADD COLUMN half_done INTEGER;\nSELECT * FROM no_such_table;\n")
    store.connect(warehouse_path).close()

    monkeypatch.setattr(schema, "MIGRATIONS_DIR", migrations)
    monkeypatch.setattr(schema, "LATEST", LATEST + 1)
    con = duckdb.connect(str(warehouse_path))
    with pytest.raises(duckdb.CatalogException, match="no_such_table"):
        schema.migrate(con, target=LATEST + 1)
    assert current_version(con) == LATEST
    assert "half_done" not in _columns(con, "cells")
    con.close()


def test_views_follow_columns_a_later_migration_adds_to_cells(warehouse):
    """A later migration adding a column to `cells` must not break the views; v_cells passes it through."""
    warehouse.execute("ALTER TABLE cells ADD COLUMN client_note VARCHAR")
    warehouse.execute(schema.VIEWS_SQL.read_text())
    _insert(warehouse, "runs", [{**run_row(), "started_at": T0}])
    _insert(warehouse, "cells", [{**cell_row(), "client_note": "hello"}])
    assert warehouse.execute("SELECT client_note, requests FROM v_cells").fetchall() == [("hello", 0)]
    assert warehouse.execute("SELECT repeats, requests FROM v_nightly").fetchall() == [(1, 0)]
    assert warehouse.execute("SELECT count(*) FROM v_comparison").fetchall() == [(0,)]
