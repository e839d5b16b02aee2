"""Warehouse performance: load, summaries, ITL and report queries, each against the naive path.

    .venv/bin/python -m benchmarks.warehouse_bench                 # defaults below, ~4-6 min on 2 cores
    .venv/bin/python -m benchmarks.warehouse_bench --rows 200000 --summary-rows 1000000 --nights 36   # quick

Targets (issue 5), on the 2-core development machine:
  load 1,000,000 request rows (64-256 chunk offsets each) from a staged run      < 5 s
  v_cells and v_nightly over 10,000,000 rows / 365 nights                        < 10 s
  one night's ITL percentiles from its chunk lists                               < 2 s
  the report's queries                                                           < 1 s each

Every figure is the median of --repeats runs (other people share the machine: single runs are noisy).
The naive paths and alternatives, measured in the same run so the ratio is known:
  load:      the same run staged as int64 gaps (the alternative to the stager's int32 gaps,
             warehouse/chunks.py); the pre-0003 storage (BIGINT[] ns offsets, one INSERT ... FROM
             read_parquet of the records as in memory); row-by-row executemany INSERTs on --naive-rows
             rows, extrapolated to --rows. The three loads take turns, repeat by repeat. (The old staged
             form, ns offsets converted inside the INSERT, is gone: such a run is refused, not loaded.)
  summaries: fetch the per-request metrics into pandas and group there;
  ITL:       fetch one night's chunk lists into pandas, explode and group.
The 10M-row warehouse is filled in SQL (not through the staged path, which the load figure covers):
its chunk lists are drawn from a pool of 100,000 generated lists, so it builds in about a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tasks.records import REQUEST_SCHEMA  # noqa: E402
from warehouse import chunks, schema, store  # noqa: E402

TARGETS = {"load": 5.0, "v_cells": 10.0, "v_nightly": 10.0, "itl_night": 2.0, "report": 1.0}
INSTANCES = (
    ("vllm-0", "vllm", "vllm"),
    ("sglang-0", "sglang", "sglang"),
    ("llama-0", "llamacpp", "llamacpp"),
    ("vllm-coloc-0", "vllm", "vllm-coloc"),
)
WORKLOADS = ("chat", "long")
CONCURRENCY = (1, 4, 16, 64)
REPEATS = 3
# Per-request timing model (ns): TTFT 20-420 ms, inter-token gap 8-40 ms by instance and load,
# +-30 % jitter per chunk, and 1 chunk in 100 stalled 5x (a scheduler hiccup).


def timing_sql(v: str) -> str:
    """TTFT and the base inter-token gap of request (or pool entry) `v`, in ns."""
    return f"""(20 + hash({v}, 1) % 400)::BIGINT * 1000000 AS ttft_ns,
               (8 + hash({v} // 285, 2) % 32)::BIGINT * 1000000 AS itl_ns"""


# The cores this process may use (taskset on a bigger machine emulates the 2-core one): DuckDB and
# Arrow size their thread pools from the hardware, not from the affinity mask, so tell them.
CORES = len(os.sched_getaffinity(0))


def connect(path: Path, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    con = store.connect(path, read_only=read_only)
    con.execute(f"SET threads = {CORES}")
    con.execute("SET enable_progress_bar = false")
    return con


def timed(fn, repeats: int, setup=None) -> tuple[float, list[float], object]:
    """Median wall time of fn(setup()) over `repeats` runs; setup (a fresh file, say) is not timed."""
    times, result = [], None
    for _ in range(repeats):
        arg = setup() if setup else None
        t = time.perf_counter()
        result = fn(arg) if setup else fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times, result


# ------------------------------------------------------------------ data


def make_staged_run(
    run_dir: Path, rows: int, ns_offsets_file: Path | None = None, int64_dir: Path | None = None
) -> dict:
    """A staged run of `rows` requests in cells of 285, each with 64-256 content chunks, written by the
    stager's own writer (store.write_staged_requests: staged form 2, µs gaps). The in-memory table is
    generated in the records' form (tasks/records.py: int64 ns offsets from the cell start).
    ns_offsets_file: the requests also written as in memory (ns offsets, for the pre-0003 storage);
    int64_dir: the same run also staged as int64 gaps. Returns the seconds of the staging conversion (chunks.to_staged) and of the
    stager's write (the conversion included)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(config={"threads": CORES})
    con.execute(f"""
        CREATE TABLE base AS
        SELECT i, 'cell-' || (i // 285) AS cell_id, (64 + hash(i, 3) % 193)::INTEGER AS n_chunks,
               (i % 285) * 37000000 + (hash(i, 4) % 1000)::BIGINT AS sent_at, {timing_sql("i")}
        FROM range({rows}) t(i)
    """)
    requests = con.sql("""
          WITH lists AS (
            SELECT *, list_transform(range(n_chunks), lambda k:
                     sent_at + ttft_ns + k * itl_ns
                     + ((hash(i, k) % 600)::BIGINT - 300) * itl_ns // 1000        -- +-30 % jitter
                     + CASE WHEN hash(i, k, 5) % 100 = 0 THEN 4 * itl_ns ELSE 0 END -- a stall
                     + (hash(i, k, 6) % 1000)::BIGINT) AS chunk_times             -- sub-µs noise
            FROM base)
          SELECT 'bench-load' AS run_id, cell_id, 'req-' || i AS request_id, 'p' || (i % 40) AS prompt_id,
                 'vllm' AS engine, 'qwen' AS model, 'dep' AS deployment_id, 'dep-0' AS instance_id,
                 256::INTEGER AS max_tokens, TIMESTAMPTZ '2026-01-01 02:00:00+00' AS cell_started_at,
                 sent_at AS scheduled_at, sent_at, chunk_times[1] - 500000 AS first_chunk_at,
                 chunk_times[1] AS first_token_at, chunk_times[-1] AS last_token_at,
                 chunk_times[-1] + 200000 AS done_at, chunk_times,
                 (100 + i % 900)::INTEGER AS prompt_tokens, n_chunks AS completion_tokens,
                 NULL::INTEGER AS cached_prompt_tokens, 'ok' AS status, NULL::VARCHAR AS error_class,
                 NULL::VARCHAR AS error_message, 200::INTEGER AS http_status, 'length' AS finish_reason
          FROM lists ORDER BY i
    """).to_arrow_table()
    for field in REQUEST_SCHEMA:  # the workload kinds' columns: empty, as for a plain prompts workload
        if field.name not in requests.column_names:
            requests = requests.append_column(field.name, pa.nulls(requests.num_rows, field.type))
    requests = requests.select(REQUEST_SCHEMA.names).cast(REQUEST_SCHEMA)
    timings = {}
    chunks.to_staged(requests.slice(0, 10))  # pyarrow.compute's first call imports (about 1 s): not the conversion
    t = time.perf_counter()
    staged = chunks.to_staged(requests)
    timings["to_staged_s"] = time.perf_counter() - t
    del staged
    # written as the nightly flow writes it (store.stage_run's writer: conversion, zstd, its row-group size)
    t = time.perf_counter()
    store.write_staged_requests(requests, run_dir / "requests.parquet")
    timings["stage_write_s"] = time.perf_counter() - t
    if ns_offsets_file is not None:
        ns_offsets_file.parent.mkdir(parents=True, exist_ok=True)
        store._write_parquet(requests, ns_offsets_file)
    if int64_dir is not None:
        int64_dir.mkdir(parents=True, exist_ok=True)
        staged = chunks.to_staged(requests)
        i = staged.schema.get_field_index("chunk_times")
        wide = staged.set_column(
            i, pa.field("chunk_times", pa.list_(pa.int64())), staged.column("chunk_times").cast(pa.list_(pa.int64()))
        )
        store._write_parquet(wide.replace_schema_metadata(staged.schema.metadata), int64_dir / "requests.parquet")
        del staged, wide
    del requests
    con.execute(f"""
        COPY (SELECT 'bench-load' AS run_id, 'cell-' || c AS cell_id, 'dep' AS deployment_id, 'dep-0' AS instance_id,
                     'vllm' AS engine, 'qwen' AS model, 'chat' AS workload_id, 'closed' AS load_kind, 'closed' AS arrival,
                     4 AS concurrency, 0 AS repeat, 285 AS requests_planned, 0 AS warmup_requests,
                     TIMESTAMPTZ '2026-01-01 02:00:00+00' AS started_at, 11000000000::BIGINT AS wall_ns
              FROM range({(rows + 284) // 285}) t(c))
        TO '{run_dir / "cells.parquet"}' (FORMAT parquet)
    """)
    for table in set(store.TABLES_IN_LOAD_ORDER) - {"runs", "cells", "requests"}:  # empty: nothing to load
        con.execute(
            f"COPY (SELECT NULL::VARCHAR AS run_id LIMIT 0) TO '{run_dir / (table + '.parquet')}' (FORMAT parquet)"
        )
    (run_dir / "run.json").write_text(
        json.dumps(
            {
                "run_id": "bench-load",
                "matrix_name": "bench",
                "matrix_path": "bench.yaml",
                "matrix_sha256": "0" * 64,
                "started_at": "2026-01-01T02:00:00+00:00",
                "status": "completed",
            }
        )
    )
    con.close()
    for f in run_dir.iterdir():  # the same run beside its requests
        if int64_dir is not None and f.name != "requests.parquet":
            shutil.copy(f, int64_dir / f.name)
    return timings


def build_big_warehouse(path: Path, rows: int, nights: int) -> dict:
    """`nights` runs x 96 cells (4 instances x 2 workloads x 4 concurrencies x 3 repeats), `rows` requests."""
    con = connect(path)
    per_night = rows // nights
    cells_per_night = len(INSTANCES) * len(WORKLOADS) * len(CONCURRENCY) * REPEATS
    per_cell = max(1, per_night // cells_per_night)
    con.execute(f"""
        INSERT INTO runs (run_id, matrix_name, matrix_path, matrix_sha256, started_at, finished_at, status, slo_ttft_ms, slo_tpot_ms)
        SELECT 'night-' || lpad(n::VARCHAR, 4, '0'), 'bench', 'bench.yaml', repeat('0', 64),
               TIMESTAMPTZ '2025-01-01 02:00:00+00' + to_days(n::INTEGER), TIMESTAMPTZ '2025-01-01 04:00:00+00' + to_days(n::INTEGER),
               'completed', 300, 40
        FROM range({nights}) t(n)
    """)
    con.execute(
        "CREATE TEMP TABLE inst AS SELECT * FROM (VALUES "
        + ", ".join(f"({k}, '{i}', '{e}', '{d}')" for k, (i, e, d) in enumerate(INSTANCES))
        + ") t(k, instance_id, engine, deployment_id)"
    )
    con.execute(f"""
        INSERT INTO cells BY NAME
        SELECT 'night-' || lpad(n::VARCHAR, 4, '0') AS run_id,
               instance_id || '.' || w || '.c' || conc || '.r' || r AS cell_id, deployment_id, instance_id, engine,
               'qwen' AS model, w AS workload_id, 'closed' AS load_kind, 'closed' AS arrival, conc AS concurrency,
               r AS repeat, {per_cell} AS requests_planned, 0 AS warmup_requests,
               TIMESTAMPTZ '2025-01-01 02:00:00+00' + to_days(n::INTEGER) AS started_at,
               (10 + hash(n, instance_id, w, conc, r) % 5)::BIGINT * 1000000000 AS wall_ns
        FROM range({nights}) t(n), inst, unnest({list(WORKLOADS)}) u(w), unnest({list(CONCURRENCY)}) c(conc), range({REPEATS}) rr(r)
    """)
    # A pool of stored chunk lists (µs gaps: the first from sent_at, then between chunks).
    con.execute(f"""
        CREATE TEMP TABLE pool AS
        WITH p AS (SELECT j, (64 + hash(j, 3) % 193)::INTEGER AS n, {timing_sql("j")}
                   FROM range(100000) t(j))
        SELECT j, list_transform(range(n), lambda k: (CASE WHEN k = 0 THEN ttft_ns
                   ELSE itl_ns + ((hash(j, k) % 600)::BIGINT - 300) * itl_ns // 1000
                        + CASE WHEN hash(j, k, 5) % 100 = 0 THEN 4 * itl_ns ELSE 0 END END) // 1000)::INTEGER[] AS gaps
        FROM p
    """)
    con.execute("CREATE TEMP TABLE pool2 AS SELECT j, gaps, len(gaps) AS n, list_sum(gaps) AS total_us FROM pool")
    con.execute("""
        CREATE TEMP TABLE cell_list AS
        SELECT row_number() OVER (ORDER BY run_id, cell_id) - 1 AS ci, run_id, cell_id, deployment_id, instance_id, engine
        FROM cells
    """)
    n_cells = con.execute("SELECT count(*) FROM cell_list").fetchall()[0][0]
    con.execute(f"""
        INSERT INTO requests BY NAME
        SELECT c.run_id, c.cell_id, c.cell_id || '#' || (i % {per_cell}) AS request_id, 'p' || (i % 40) AS prompt_id,
               c.engine, 'qwen' AS model, c.deployment_id, c.instance_id, 256 AS max_tokens,
               TIMESTAMPTZ '2025-01-01 02:00:00+00' AS cell_started_at,
               (i % {per_cell}) * 30000000 AS scheduled_at, (i % {per_cell}) * 30000000 + 100000 AS sent_at,
               (i % {per_cell}) * 30000000 + 100000 + p.gaps[1] * 1000 - 500000 AS first_chunk_at,
               (i % {per_cell}) * 30000000 + 100000 + p.gaps[1] * 1000 AS first_token_at,
               (i % {per_cell}) * 30000000 + 100000 + p.total_us * 1000 AS last_token_at,
               (i % {per_cell}) * 30000000 + 100000 + p.total_us * 1000 + 200000 AS done_at,
               p.gaps AS chunk_times, 500 AS prompt_tokens, p.n AS completion_tokens,
               CASE WHEN hash(i, 9) % 200 = 0 THEN 'timeout' ELSE 'ok' END AS status
        FROM range({n_cells * per_cell}) t(i)
        JOIN cell_list c ON c.ci = i // {per_cell}
        JOIN pool2 p ON p.j = (hash(i, 8) % 100000)::BIGINT
    """)
    con.execute("CHECKPOINT")
    total = con.execute("SELECT count(*), sum(len(chunk_times)) FROM requests").fetchall()[0]
    con.close()
    return {
        "requests": total[0],
        "chunk_values": int(total[1]),
        "cells": n_cells,
        "nights": nights,
        "file_mb": round(path.stat().st_size / 1e6),
    }


# ------------------------------------------------------------------ measurements


def bench_load(tmp: Path, rows: int, repeats: int, naive_rows: int) -> dict:
    run_dir, ns_file, int64_dir = tmp / "staged", tmp / "ns-offsets" / "requests.parquet", tmp / "staged-int64"
    t = time.perf_counter()
    staging = make_staged_run(run_dir, rows, ns_file, int64_dir)
    gen_s = time.perf_counter() - t
    assert chunks.is_us_gaps(pq.read_schema(run_dir / "requests.parquet"))

    def parquet_mb(d: Path) -> float:
        return (d if d.suffix == ".parquet" else d / "requests.parquet").stat().st_size / 1e6

    def fresh(name: str, target: int | None = None) -> duckdb.DuckDBPyConnection:
        path = tmp / f"{name}.duckdb"
        for p in (path, Path(str(path) + ".wal")):
            p.unlink(missing_ok=True)
        if target is None:
            return connect(path)
        con = duckdb.connect(str(path), config={"threads": CORES})
        schema.migrate(con, target=target)
        return con

    sizes = {}

    def loader(d: Path):
        def load(con):
            # store.load_run as the nightly flow calls it: read the staged run, one transaction
            counts = store.load_run(con, d)
            con.close()
            return counts["requests"]

        return load

    def old_storage(con):
        # the load as it was before migration 0003: BIGINT[] ns offsets straight from the Parquet
        # the columns that schema had (the staged file also holds the workload kinds' later ones)
        cols = ", ".join(
            f'"{c}"'
            for (c,) in con.execute("SELECT column_name FROM duckdb_columns() WHERE table_name = 'requests'").fetchall()
        )
        con.execute("BEGIN")
        con.execute(f"INSERT INTO requests ({cols}) SELECT {cols} FROM read_parquet(?)", [str(ns_file)])
        con.execute("COMMIT")
        con.close()

    sample = pq.read_table(run_dir / "requests.parquet").slice(0, naive_rows)  # staged form 2: the stored gaps
    names = sample.column_names
    sample_rows = [tuple(r[n] for n in names) for r in sample.to_pylist()]

    def row_by_row(con):
        con.execute("BEGIN")
        con.executemany(
            f"INSERT INTO requests ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)})", sample_rows
        )
        con.execute("COMMIT")
        con.close()

    def settled_size(name: str) -> int:
        # after a checkpoint, so that blocks a large transaction wrote and freed are not counted
        con = duckdb.connect(str(tmp / f"{name}.duckdb"))
        con.execute("CHECKPOINT")
        used = con.execute("SELECT used_blocks * block_size FROM pragma_database_size()").fetchall()[0][0]
        con.close()
        return used

    # Interleaved, one repeat of each in turn, so that a busy spell of the shared machine spreads over all.
    variants = {
        "ours": (loader(run_dir), lambda: fresh("load")),
        "int64": (loader(int64_dir), lambda: fresh("int64")),
        "old_storage": (old_storage, lambda: fresh("old", target=2)),
    }
    runs: dict[str, list[float]] = {k: [] for k in variants}
    loaded = None
    for _ in range(repeats):
        for name, (fn, setup) in variants.items():
            _, times, result = timed(fn, 1, setup)
            runs[name] += times
            loaded = result if name == "ours" else loaded
    for name, db in (("ours", "load"), ("int64", "int64"), ("old_storage", "old")):
        sizes[name] = settled_size(db)
    naive_s, _, _ = timed(row_by_row, 1, lambda: fresh("naive"))
    naive_extrapolated = naive_s / naive_rows * rows
    med = {k: statistics.median(v) for k, v in runs.items()}
    return {
        "rows": loaded,
        "staged_parquet_mb": round(parquet_mb(run_dir)),
        "generate_s": round(gen_s, 1),
        "to_staged_s": staging["to_staged_s"],
        "stage_write_s": staging["stage_write_s"],
        "load_s": med["ours"],
        "load_runs_s": runs["ours"],
        "ns_offsets_parquet_mb": round(parquet_mb(ns_file)),
        "int64_s": med["int64"],
        "int64_runs_s": runs["int64"],
        "int64_parquet_mb": round(parquet_mb(int64_dir)),
        "file_mb_int64": round(sizes["int64"] / 1e6),
        "old_storage_s": med["old_storage"],
        "old_storage_runs_s": runs["old_storage"],
        "row_by_row_s_for_sample": naive_s,
        "row_by_row_rows": naive_rows,
        "row_by_row_extrapolated_s": naive_extrapolated,
        "file_mb_ours": round(sizes["ours"] / 1e6),
        "file_mb_old_storage": round(sizes["old_storage"] / 1e6),
    }


SUMMARY_CELLS = """SELECT run_id, cell_id, engine, model, workload_id, concurrency, repeat, requests, ok, failed,
    output_throughput_tps, request_throughput_rps, goodput_rps,
    ttft_ms_mean, ttft_ms_p50, ttft_ms_p90, ttft_ms_p95, ttft_ms_p99,
    tpot_ms_mean, tpot_ms_p50, tpot_ms_p90, tpot_ms_p95, tpot_ms_p99,
    e2e_ms_mean, e2e_ms_p50, e2e_ms_p90, e2e_ms_p95, e2e_ms_p99 FROM v_cells"""
SUMMARY_NIGHTLY = """SELECT run_id, night, engine, model, workload_id, concurrency, repeats, requests, ok,
    output_throughput_tps, output_throughput_tps_min, output_throughput_tps_max, goodput_rps,
    ttft_ms_p50, ttft_ms_p90, ttft_ms_p95, ttft_ms_p99, tpot_ms_p50, tpot_ms_p95, tpot_ms_p99,
    e2e_ms_p50, e2e_ms_p95, e2e_ms_p99 FROM v_nightly"""


def bench_queries(path: Path, repeats: int, nights: int) -> dict:

    from warehouse import stats
    from warehouse.transforms import summarize_run

    con = connect(path, read_only=True)
    night = con.execute("SELECT max(run_id) FROM runs").fetchall()[0][0]
    out: dict[str, object] = {}
    # as a report would: find the last 30 nights in `runs` (tiny), then filter the views on run_id
    cutoff_30, cutoff_night = con.execute(
        "SELECT min(run_id), min(started_at)::DATE FROM (SELECT * FROM runs ORDER BY started_at DESC LIMIT 30)"
    ).fetchall()[0]

    def q(sql, params=None):
        return lambda: con.execute(sql, params or []).fetchall()

    out["v_cells_s"], out["v_cells_runs_s"], res = timed(q(SUMMARY_CELLS), repeats)
    out["v_cells_rows"] = len(res)
    out["v_nightly_s"], out["v_nightly_runs_s"], res = timed(q(SUMMARY_NIGHTLY), repeats)
    out["v_nightly_rows"] = len(res)

    # one night's ITL percentiles from its chunk lists: pooled per instance, and per cell via v_cells
    itl_night = """SELECT instance_id, quantile_cont(gap, [0.5, 0.9, 0.95, 0.99]) FROM (
        SELECT instance_id, unnest(chunk_times[2:]) / 1e3 AS gap FROM requests WHERE run_id = ? AND status = 'ok')
        GROUP BY instance_id"""
    out["itl_night_s"], out["itl_night_runs_s"], _ = timed(q(itl_night, [night]), repeats)
    out["itl_night_v_cells_s"], _, _ = timed(
        q("SELECT cell_id, itl_ms_p50, itl_ms_p90, itl_ms_p95, itl_ms_p99 FROM v_cells WHERE run_id = ?", [night]),
        repeats,
    )
    out["itl_night_values"] = con.execute(
        "SELECT sum(len(chunk_times) - 1) FROM requests WHERE run_id = ?", [night]
    ).fetchall()[0][0]

    # the report's queries
    report = {
        "report: summarize_run (polars, one night)": lambda: summarize_run(con, night),
        "report: v_cells of one night (all columns, ITL included)": q(
            "SELECT * FROM v_cells WHERE run_id = ?", [night]
        ),
        "report: v_comparison of one night": q("SELECT * FROM v_comparison WHERE run_id = ?", [night]),
        "report: TTFT p95 trend of one engine, last 30 nights": q(
            "SELECT night, workload_id, concurrency, ttft_ms_p95 FROM v_nightly WHERE engine = 'sglang' "
            "AND run_id >= ?",
            [cutoff_30],
        ),
        "report: the same, filtered on night instead of run_id": q(
            "SELECT night, workload_id, concurrency, ttft_ms_p95 FROM v_nightly WHERE engine = 'sglang' "
            "AND night >= ?::DATE",
            [cutoff_night],
        ),
        "report: regressions over 60 nights (stats.nightly_regressions)": lambda: stats.nightly_regressions(
            con, "ttft_ms_p95"
        ),
        "report: failures of the last 30 nights": q(
            "SELECT run_id, status, error_class, count(*) FROM requests WHERE status <> 'ok' AND run_id >= "
            "(SELECT min(run_id) FROM (SELECT run_id FROM runs ORDER BY run_id DESC LIMIT 30)) GROUP BY ALL"
        ),
    }
    out["report"] = {name: timed(fn, repeats)[0] for name, fn in report.items()}

    # naive: the same per-cell summary in pandas, from the per-request metrics
    def pandas_cells():
        df = con.sql("SELECT run_id, cell_id, status, completion_tokens, ttft_ms, tpot_ms, e2e_ms FROM v_requests").df()
        ok = df[df["status"] == "ok"]
        g = ok.groupby(["run_id", "cell_id"])
        parts = [g.size().rename("ok"), g["completion_tokens"].sum()]
        for m in ("ttft_ms", "tpot_ms", "e2e_ms"):
            parts.append(g[m].mean().rename(f"{m}_mean"))
            parts.append(g[m].quantile([0.5, 0.9, 0.95, 0.99]).unstack().add_prefix(f"{m}_"))
        import pandas as pd

        return pd.concat(parts, axis=1)

    out["pandas_cells_s"], _, _ = timed(pandas_cells, 1)

    def pandas_itl():
        df = con.sql(
            "SELECT instance_id, chunk_times FROM requests WHERE run_id = ? AND status = 'ok'", params=[night]
        ).df()
        df["itl"] = df["chunk_times"].map(lambda g: g[1:])
        e = df[["instance_id", "itl"]].explode("itl")
        e["itl"] = e["itl"].astype(float) / 1e3
        return e.groupby("instance_id")["itl"].quantile([0.5, 0.9, 0.95, 0.99])

    out["pandas_itl_night_s"], _, _ = timed(pandas_itl, 1)
    con.close()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--rows", type=int, default=1_000_000, help="request rows of the load benchmark (default 1,000,000)"
    )
    ap.add_argument(
        "--summary-rows", type=int, default=10_000_000, help="request rows of the big warehouse (default 10,000,000)"
    )
    ap.add_argument("--nights", type=int, default=365, help="nights (runs) of the big warehouse (default 365)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per figure; the median is reported (default 3)")
    ap.add_argument(
        "--naive-rows", type=int, default=2000, help="rows inserted one by one for the naive load (default 2,000)"
    )
    ap.add_argument("--tmp", help="scratch folder (default: a new one under $TMPDIR, removed at the end)")
    ap.add_argument("--json", help="also write the figures as JSON here")
    ap.add_argument("--skip-load", action="store_true")
    ap.add_argument("--skip-queries", action="store_true")
    args = ap.parse_args(argv)

    pa.set_cpu_count(CORES)
    tmp = Path(args.tmp or tempfile.mkdtemp(prefix="bakeoff-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    result: dict[str, object] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "cores_used": CORES,
        "duckdb": duckdb.__version__,
        "args": vars(args),
    }
    try:
        if not args.skip_load:
            print(f"load: generating a staged run of {args.rows:,} requests ...", flush=True)
            result["load"] = bench_load(tmp, args.rows, args.repeats, args.naive_rows)
            for f in tmp.glob("*.duckdb*"):
                f.unlink()
            for d in ("staged", "ns-offsets", "staged-int64"):
                shutil.rmtree(tmp / d, ignore_errors=True)
            print(json.dumps(result["load"], indent=1), flush=True)
        if not args.skip_queries:
            print(
                f"queries: building a warehouse of {args.summary_rows:,} requests over {args.nights} nights ...",
                flush=True,
            )
            t = time.perf_counter()
            big = tmp / "big.duckdb"
            result["big"] = build_big_warehouse(big, args.summary_rows, args.nights)
            result["big"]["build_s"] = round(time.perf_counter() - t, 1)
            print(json.dumps(result["big"]), flush=True)
            result["queries"] = bench_queries(big, args.repeats, args.nights)
            print(json.dumps(result["queries"], indent=1), flush=True)
    finally:
        if not args.tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(render(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return 0


def render(r: dict) -> str:
    lines = [f"| what | median of {r['args']['repeats']} | target | naive path, same run |", "|---|---|---|---|"]
    if "load" in r:
        ld = r["load"]
        lines.append(
            f"| load {ld['rows']:,} requests (staged form 2, int32 µs gaps: Parquet {ld['staged_parquet_mb']} MB -> "
            f"`store.load_run`), file {ld['file_mb_ours']} MB | {ld['load_s']:.2f} s | < {TARGETS['load']:g} s | "
            f"staged as int64 gaps "
            f"(Parquet {ld['int64_parquet_mb']} MB): {ld['int64_s']:.2f} s; "
            f"pre-0003 storage (BIGINT[] ns, Parquet {ld['ns_offsets_parquet_mb']} MB): {ld['old_storage_s']:.2f} s, "
            f"{ld['file_mb_old_storage']} MB "
            f"({ld['old_storage_s'] / ld['load_s']:.1f}x); row by row: {ld['row_by_row_extrapolated_s']:,.0f} s "
            f"extrapolated from {ld['row_by_row_rows']:,} rows ({ld['row_by_row_extrapolated_s'] / ld['load_s']:,.0f}x) |"
        )
        lines.append(
            f"| staging's conversion of those rows (ns offsets -> µs gaps, `chunks.to_staged`), once per run | "
            f"{ld['to_staged_s']:.2f} s | | the stager's whole write, conversion included: {ld['stage_write_s']:.1f} s |"
        )
    if "queries" in r:
        b, qq = r["big"], r["queries"]
        size = f"{b['requests']:,} requests / {b['nights']} nights / {b['chunk_values'] / 1e9:.2f} G chunk values, {b['file_mb']:,} MB"
        lines.append(
            f"| `v_cells`, every cell ({qq['v_cells_rows']:,} rows; {size}) | {qq['v_cells_s']:.2f} s | "
            f"< {TARGETS['v_cells']:g} s | pandas from v_requests: {qq['pandas_cells_s']:.1f} s "
            f"({qq['pandas_cells_s'] / qq['v_cells_s']:.1f}x) |"
        )
        lines.append(
            f"| `v_nightly`, every night x configuration ({qq['v_nightly_rows']:,} rows) | {qq['v_nightly_s']:.2f} s | "
            f"< {TARGETS['v_nightly']:g} s | |"
        )
        lines.append(
            f"| one night's ITL percentiles from its chunk lists ({qq['itl_night_values']:,} gaps), "
            f"per instance | {qq['itl_night_s']:.2f} s | < {TARGETS['itl_night']:g} s | pandas explode: "
            f"{qq['pandas_itl_night_s']:.1f} s ({qq['pandas_itl_night_s'] / qq['itl_night_s']:.0f}x) |"
        )
        lines.append(
            f"| the same, per cell through `v_cells` | {qq['itl_night_v_cells_s']:.2f} s | < {TARGETS['itl_night']:g} s | |"
        )
        for name, s in qq["report"].items():
            lines.append(f"| {name} | {s:.2f} s | < {TARGETS['report']:g} s | |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
