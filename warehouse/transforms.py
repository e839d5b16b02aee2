"""polars transforms: raw request rows -> per-request metrics -> per-cell summary.

The same definitions as the SQL views (warehouse/sql/views.sql); a test holds the two equal.
Percentiles are linear-interpolated, like DuckDB's quantile_cont.
"""

from __future__ import annotations

from typing import Any, cast

import duckdb
import polars as pl

from warehouse.store import NoSuchRun

NS_PER_MS = 1e6
US_PER_MS = 1e3
METRICS = ("ttft_ms", "tpot_ms", "e2e_ms")
QUANTILES = {"p50": 0.50, "p90": 0.90, "p95": 0.95, "p99": 0.99}


def request_metrics(requests: pl.DataFrame) -> pl.DataFrame:
    """Per-request TTFT, E2E, queue delay, TPOT, tokens/s and ITL gaps (ms), from rows as stored
    (chunk_times as µs gaps, the first from sent_at: ITL is the gaps after it)."""
    r = pl.col
    return requests.with_columns(
        ttft_ms=(r("first_token_at") - r("sent_at")) / NS_PER_MS,
        e2e_ms=(r("last_token_at") - r("sent_at")) / NS_PER_MS,
        queue_ms=(r("sent_at") - r("scheduled_at")) / NS_PER_MS,
        tpot_ms=pl.when(r("completion_tokens") > 1).then(
            (r("last_token_at") - r("first_token_at")) / NS_PER_MS / (r("completion_tokens") - 1)
        ),
        tokens_per_s=pl.when(r("last_token_at") > r("sent_at")).then(
            r("completion_tokens") / ((r("last_token_at") - r("sent_at")) / 1e9)
        ),
        itl_ms=r("chunk_times").list.slice(1) / US_PER_MS,
    )


def cell_summary(
    metrics: pl.DataFrame, cells: pl.DataFrame, slo: dict[str, float | None] | None = None
) -> pl.DataFrame:
    """One row per cell: counts, throughput, goodput, latency mean and percentiles, pooled ITL."""
    slo = {k: v for k, v in (slo or {}).items() if v is not None}
    ok = pl.col("status") == "ok"
    meets = ok
    for metric, limit in slo.items():
        value = pl.col(metric).fill_null(0.0) if metric == "tpot_ms" else pl.col(metric)
        meets = meets & (value <= limit)

    latency = []
    for m in METRICS:
        latency.append(pl.col(m).filter(ok).mean().alias(f"{m}_mean"))
        latency += [pl.col(m).filter(ok).quantile(q, "linear").alias(f"{m}_{name}") for name, q in QUANTILES.items()]
    per_cell = metrics.group_by("run_id", "cell_id").agg(
        pl.len().alias("requests"),
        ok.sum().alias("ok"),
        (~ok).sum().alias("failed"),
        pl.col("completion_tokens").filter(ok).sum().alias("output_tokens"),
        meets.sum().alias("_meets"),
        *latency,
    )
    itl = (
        metrics.filter(ok)
        .select("run_id", "cell_id", "itl_ms")
        .explode("itl_ms")
        .drop_nulls("itl_ms")
        .group_by("run_id", "cell_id")
        .agg(*(pl.col("itl_ms").quantile(q, "linear").alias(f"itl_ms_{n}") for n, q in QUANTILES.items()))
    )
    wall_s = pl.col("wall_ns") / 1e9
    out = (
        cells.join(per_cell, on=["run_id", "cell_id"], how="left")
        .join(itl, on=["run_id", "cell_id"], how="left")
        .with_columns(
            pl.col("requests", "ok", "failed", "output_tokens").fill_null(0),
            wall_s.alias("wall_s"),
        )
        .with_columns(
            output_throughput_tps=pl.col("output_tokens") / pl.col("wall_s"),
            request_throughput_rps=pl.col("ok") / pl.col("wall_s"),
            goodput_rps=(pl.col("_meets").fill_null(0) / pl.col("wall_s")) if slo else pl.lit(None, pl.Float64),
        )
        .drop("_meets")
        .sort("deployment_id", "instance_id", "workload_id", "concurrency", "repeat")
    )
    return out


def load_run_frames(
    con: duckdb.DuckDBPyConnection, run_id: str
) -> tuple[dict[str, Any], pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(run row, deployments, cells, requests) of one run, from the tables, as stored."""
    cur = con.execute("SELECT * FROM runs WHERE run_id = ?", [run_id])
    rows = cur.fetchall()  # fetch all: DuckDB 2 refuses new queries while a result is unfinished
    if not rows:
        raise NoSuchRun(run_id)
    run = dict(zip([d[0] for d in cur.description], rows[0], strict=True))

    def frame(table: str) -> pl.DataFrame:
        return cast(
            pl.DataFrame,
            pl.from_arrow(con.sql(f"SELECT * FROM {table} WHERE run_id = ?", params=[run_id]).to_arrow_table()),
        )

    return run, frame("deployments"), frame("cells"), frame("requests")


def summarize_run(
    con: duckdb.DuckDBPyConnection, run_id: str
) -> tuple[dict[str, Any], pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(run, deployments, per-cell summary, per-request metrics) for the report."""
    run, deployments, cells, requests = load_run_frames(con, run_id)
    metrics = request_metrics(requests)
    slo = {"ttft_ms": run.get("slo_ttft_ms"), "tpot_ms": run.get("slo_tpot_ms"), "e2e_ms": run.get("slo_e2e_ms")}
    return run, deployments, cell_summary(metrics, cells, slo), metrics
