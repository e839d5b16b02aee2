"""The stored form of chunk times, and the conversions to and from the staged form.

Staged (tasks/records.py, the Parquet a run leaves on disk): `chunk_times` = BIGINT ns offsets of every
content chunk from the cell start. Stored (migration 0003): INTEGER µs gaps, the first one from
`sent_at` (from the cell start when `sent_at` is NULL), each later one from the chunk before. Both
offsets are floored to whole µs *before* differencing, so `sent_at // 1000 + running sum` returns each
offset floored to µs, with no drift along the list.

The load converts inside DuckDB, in the same statement that reads the staged Parquet and inserts
(`STAGED_TO_STORED`): DuckDB decodes the Parquet on every core and streams, where a pyarrow read plus a
numpy conversion plus an Arrow insert measured about twice as long (numbers in the README). The lambda
works on (offset, previous offset) pairs from list_zip rather than indexing the list per element,
which measured about 1.3x faster. A gap over 2^31 µs (35 min) fails the cast, and the load with it.
"""

from __future__ import annotations

import duckdb
import polars as pl
import pyarrow as pa

NS_PER_US = 1000

# SQL expression over a staged row (columns chunk_times, sent_at) giving the stored chunk_times.
STAGED_TO_STORED = """CASE WHEN chunk_times IS NOT NULL THEN list_transform(
    list_zip(chunk_times, list_prepend(coalesce(sent_at, 0), chunk_times[:-1]), true),
    lambda pair: (pair[1] // 1000 - pair[2] // 1000)::INTEGER) END"""


def to_stored(requests: pa.Table) -> pa.Table:
    """A staged requests table (Arrow) with chunk_times in the stored form (for tools and tests; the
    load runs the same expression inside its INSERT)."""
    con = duckdb.connect()
    try:
        staged_requests_arrow = requests  # noqa: F841 (read by DuckDB's replacement scan)
        return con.sql(f"SELECT * REPLACE ({STAGED_TO_STORED} AS chunk_times) FROM staged_requests_arrow").to_arrow_table()
    finally:
        con.close()


def gaps_us_to_offsets_ns() -> pl.Expr:
    """polars expression: stored µs gaps -> staged-form ns offsets (floored to µs), as `chunk_times`."""
    base_us = pl.col("sent_at").fill_null(0) // NS_PER_US
    return ((pl.col("chunk_times").cast(pl.List(pl.Int64)).list.eval(pl.element().cum_sum()) + base_us) * NS_PER_US).alias(
        "chunk_times")
