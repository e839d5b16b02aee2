"""The stored form of chunk times, and the conversions to and from the staged form.

Staged (tasks/records.py, the Parquet a run leaves on disk): `chunk_times` = BIGINT ns offsets of every
content chunk from the cell start. Stored (migration 0003): INTEGER µs gaps, the first one from
`sent_at` (from the cell start when `sent_at` is NULL), each later one from the chunk before. Both
offsets are floored to whole µs *before* differencing, so `sent_at // 1000 + running sum` returns each
offset floored to µs, with no drift along the list.

The conversion runs in numpy over the flat child array of the Arrow list column: no Python loop per
request, and no DuckDB lambda per element (which costs about as much as the whole insert).
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

NS_PER_US = 1000
STORED_TYPE = pa.list_(pa.int32())
INT32_MAX = np.iinfo(np.int32).max


def offsets_ns_to_gaps_us(chunk_times: pa.Array | pa.ChunkedArray, sent_at: pa.Array | pa.ChunkedArray) -> pa.ListArray:
    """Staged ns offsets (list<int64>) -> stored µs gaps (list<int32>); nulls stay null."""
    lists = _one_chunk(chunk_times)
    # flatten() and the lengths honour a sliced array's offset and skip null slots; .offsets/.values do not.
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    starts = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=starts[1:])
    us = lists.flatten().to_numpy(zero_copy_only=False).astype(np.int64, copy=False) // NS_PER_US
    gaps = np.empty_like(us)
    if len(us):
        gaps[0] = us[0]
        np.subtract(us[1:], us[:-1], out=gaps[1:])
    nonempty = lengths > 0
    base = pc.fill_null(_one_chunk(sent_at), 0).to_numpy(zero_copy_only=False).astype(np.int64, copy=False) // NS_PER_US
    firsts = starts[:-1][nonempty]  # index of the first value of each non-empty list
    gaps[firsts] = us[firsts] - base[nonempty]
    if len(gaps) and (gaps.max() > INT32_MAX or gaps.min() < -INT32_MAX):
        raise ValueError("a chunk gap exceeds 2^31 µs (35 min): it cannot be stored in requests.chunk_times")
    return pa.ListArray.from_arrays(pa.array(starts.astype(np.int32)), pa.array(gaps.astype(np.int32)),
                                    mask=pc.is_null(lists) if lists.null_count else None)


def to_stored(requests: pa.Table) -> pa.Table:
    """A staged requests table with chunk_times converted to the stored form."""
    i = requests.schema.get_field_index("chunk_times")
    converted = offsets_ns_to_gaps_us(requests.column(i), requests.column("sent_at"))
    return requests.set_column(i, pa.field("chunk_times", STORED_TYPE), converted)


def gaps_us_to_offsets_ns() -> pl.Expr:
    """polars expression: stored µs gaps -> staged-form ns offsets (floored to µs), as `chunk_times`."""
    base_us = pl.col("sent_at").fill_null(0) // NS_PER_US
    return ((pl.col("chunk_times").cast(pl.List(pl.Int64)).list.eval(pl.element().cum_sum()) + base_us) * NS_PER_US).alias(
        "chunk_times")


def _one_chunk(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
