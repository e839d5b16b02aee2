"""`bakeoff export`: tables as Parquet partitioned by run (hive style), the warehouse opened read-only."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from tests.builders import cell_row, deployment_row, host_sample, record, run_row, stage
from warehouse import store
from warehouse.export import export_parquet

ROOT = Path(__file__).resolve().parent.parent


def _two_runs(tmp_path, con):
    for run_id, n in (("run-a", 3), ("run-b", 2)):
        store.load_run(
            con,
            stage(
                tmp_path / run_id,
                [record(i, run_id=run_id) for i in range(n)],
                [cell_row(run_id=run_id)],
                run_row(run_id),
                [deployment_row(run_id)],
                host_samples=[host_sample(run_id)],
            ),
        )


def _read(out: Path, table: str) -> list[tuple]:
    con = duckdb.connect()
    return con.execute(
        f"SELECT * EXCLUDE (run_id), run_id FROM read_parquet('{out}/{table}/*/*.parquet', hive_partitioning = true) "
        "ORDER BY ALL"
    ).fetchall()


def _table(con, table: str) -> list[tuple]:
    return con.execute(f"SELECT * EXCLUDE (run_id), run_id FROM {table} ORDER BY ALL").fetchall()


def test_export_writes_every_run_table_partitioned_by_run(tmp_path, warehouse):
    _two_runs(tmp_path, warehouse)
    out = tmp_path / "export"
    counts = export_parquet(warehouse, out)
    assert counts["requests"] == 5 and counts["runs"] == 2 and counts["host_samples"] == 2
    assert sorted(p.name for p in (out / "requests").iterdir()) == ["run_id=run-a", "run_id=run-b"]
    for table in ("runs", "deployments", "cells", "requests", "host_samples"):
        assert _read(out, table) == _table(warehouse, table), table
    manifest = json.loads((out / "_export.json").read_text())
    assert manifest["exported_runs"] == ["run-a", "run-b"] and manifest["rows"]["requests"] == 5


def test_re_exporting_a_run_replaces_only_its_partition(tmp_path, warehouse):
    _two_runs(tmp_path, warehouse)
    out = tmp_path / "export"
    export_parquet(warehouse, out)
    stale = out / "requests" / "run_id=run-a" / "stale_from_an_old_export.parquet"
    stale.write_bytes((out / "requests" / "run_id=run-a").glob("*.parquet").__next__().read_bytes())
    b_files = {p: p.stat().st_mtime_ns for p in (out / "requests" / "run_id=run-b").iterdir()}
    counts = export_parquet(warehouse, out, runs=["run-a"])
    assert counts["requests"] == 3
    assert not stale.exists()
    assert {p: p.stat().st_mtime_ns for p in (out / "requests" / "run_id=run-b").iterdir()} == b_files
    assert _read(out, "requests") == _table(warehouse, "requests")
    with pytest.raises(store.NoSuchRun, match="no run run-zz in the warehouse"):
        export_parquet(warehouse, out, runs=["run-zz"])


def test_bakeoff_export_cli_is_read_only(tmp_path, warehouse_path):
    con = store.connect(warehouse_path)
    _two_runs(tmp_path, con)
    con.close()
    digest = hashlib.sha256(warehouse_path.read_bytes()).hexdigest()
    # a second reader holds the file read-only meanwhile: a writer could not open it, a reader can
    reader = duckdb.connect(str(warehouse_path), read_only=True)
    try:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        cli = [sys.executable, "-m", "flows.cli", "export", "--warehouse", str(warehouse_path)]
        done = subprocess.run(
            [*cli, str(tmp_path / "out"), "--run", "run-b"], capture_output=True, text=True, timeout=120, env=env
        )
        assert done.returncode == 0, done.stderr
        assert "requests: 2" in done.stdout
        assert [p.name for p in (tmp_path / "out" / "requests").iterdir()] == ["run_id=run-b"]
        bad = subprocess.run(
            [*cli, str(tmp_path / "out2"), "--run", "nope"], capture_output=True, text=True, timeout=120, env=env
        )
        assert bad.returncode == 2 and "no run nope" in bad.stderr and "Traceback" not in bad.stderr
    finally:
        reader.close()
    assert hashlib.sha256(warehouse_path.read_bytes()).hexdigest() == digest


def test_rejected_rows_are_exported_with_their_run(tmp_path, warehouse):
    """rejected_requests has a run_id, so it is exported like every run table (JSON record included)."""
    records = [record(i) for i in range(3)]
    records[1].status = "weird"
    cells, deployments = [cell_row()], [deployment_row()]
    verdict, _ = store.gate_and_load(warehouse, stage(tmp_path, records, cells, run_row(), deployments))
    assert verdict.outcome == "failed_rows"
    out = tmp_path / "export"
    counts = export_parquet(warehouse, out)
    assert (counts["requests"], counts["rejected_requests"]) == (2, 1)
    (row,) = (
        duckdb.connect()
        .execute(
            f"SELECT run_id, request_id, failed_expectations, json_extract_string(record, '$.status') "
            f"FROM read_parquet('{out}/rejected_requests/*/*.parquet', hive_partitioning = true)"
        )
        .fetchall()
    )
    assert row == ("run-1", "cell-a#1", ["expect_column_values_to_be_in_set(status)"], "weird")
