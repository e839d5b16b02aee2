"""The summary table `bakeoff run` prints at the end: one line per cell, plus failed deployments."""

from __future__ import annotations

import polars as pl

COLUMNS = {
    "deployment_id": "deployment",
    "instance_id": "instance",
    "workload_id": "workload",
    "concurrency": "conc",
    "ok": "ok",
    "failed": "failed",
    "output_throughput_tps": "out tok/s",
    "ttft_ms_p50": "TTFT p50 ms",
    "ttft_ms_p95": "TTFT p95 ms",
    "tpot_ms_p50": "TPOT p50 ms",
    "e2e_ms_p50": "E2E p50 ms",
    "e2e_ms_p95": "E2E p95 ms",
}


def summary_table(summary: pl.DataFrame) -> pl.DataFrame:
    return summary.select(
        [
            pl.col(c).round(1).alias(n) if summary.schema[c].is_float() else pl.col(c).alias(n)
            for c, n in COLUMNS.items()
        ]
    )


def print_summary(summary: pl.DataFrame, deployments: pl.DataFrame) -> None:
    with pl.Config(
        tbl_rows=200, tbl_cols=-1, tbl_width_chars=200, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True
    ):
        print(summary_table(summary))
    failed = deployments.filter(~pl.col("started"))
    for row in failed.iter_rows(named=True):
        print(f"deployment {row['instance_id']} did not start: {row['failure_class']}: {row['failure_message']}")
