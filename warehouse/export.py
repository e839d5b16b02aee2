"""`bakeoff export`: the warehouse's tables as Parquet, partitioned by run (hive style), for users who
outgrow one DuckDB file (Spark, polars.scan_parquet, DuckDB over a folder, object storage).

Layout: OUT/TABLE/run_id=RUN/data_0.parquet, one folder per table that has a run_id column, plus
OUT/_export.json (schema version, row counts). Columns are as stored (chunk_times: µs gaps, see
warehouse/README.md); run_id is in the folder name, which readers turn back into a column
(`read_parquet('OUT/requests/*/*.parquet', hive_partitioning = true, hive_types_autocast = false)`;
without the last option DuckDB would turn a run id that looks like a number or date into one).

Each table is written by DuckDB's COPY ... PARTITION_BY into a scratch folder, then every partition
folder replaces the one of the same run: re-exporting a run leaves no stale file of an earlier
export, and runs not exported this time are left as they are.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from warehouse.schema import current_version
from warehouse.store import NoSuchRun


def run_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Base tables with a run_id column, in name order (new tables of later migrations included)."""
    return [
        r[0]
        for r in con.execute(
            "SELECT table_name FROM information_schema.columns WHERE table_schema = 'main' AND column_name = 'run_id' "
            "AND table_name IN (SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE') "
            "ORDER BY table_name"
        ).fetchall()
    ]


def export_parquet(
    con: duckdb.DuckDBPyConnection, out_dir: str | Path, runs: Sequence[str] | None = None
) -> dict[str, int]:
    """Write every run table (or only `runs`' rows) under out_dir; returns rows written per table."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    known = {r[0] for r in con.execute("SELECT run_id FROM runs").fetchall()}
    if runs is not None:
        missing = sorted(set(runs) - known)
        if missing:
            raise NoSuchRun(missing)
    where, params = ("WHERE run_id IN (SELECT unnest(?::VARCHAR[]))", [list(runs)]) if runs is not None else ("", [])
    counts: dict[str, int] = {}
    for table in run_tables(con):
        scratch = out / f".{table}.partial"
        shutil.rmtree(scratch, ignore_errors=True)
        n = con.execute(f"SELECT count(*) FROM {table} {where}", params).fetchall()[0][0]
        counts[table] = n
        if n:
            con.execute(
                f"COPY (SELECT * FROM {table} {where}) TO '{_sql_path(scratch)}' "
                "(FORMAT parquet, COMPRESSION zstd, PARTITION_BY (run_id))",
                params,
            ).fetchall()
            target = out / table
            target.mkdir(exist_ok=True)
            for part in sorted(scratch.iterdir()):
                final = target / part.name
                if final.exists():
                    shutil.rmtree(final)
                part.rename(final)
        shutil.rmtree(scratch, ignore_errors=True)
    manifest = {
        "exported_at": datetime.now(UTC).isoformat(),
        "schema_version": current_version(con),
        "exported_runs": sorted(runs) if runs is not None else sorted(known),
        "rows": counts,
        "layout": "TABLE/run_id=RUN/*.parquet (hive partitioning); chunk_times as stored: µs gaps",
    }
    (out / "_export.json").write_text(json.dumps(manifest, indent=2))
    return counts


def _sql_path(path: Path) -> str:
    return str(path.resolve()).replace("'", "''")
