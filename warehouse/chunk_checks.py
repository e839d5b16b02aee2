"""The gate's chunk_times checks: GX has no expectation over list columns, so the lists are flattened
here (pyarrow/numpy) into two boolean helper columns, which the requests suite expects to be True: GX
stays the judge, the helpers only flatten the lists.

They read chunk_times in staged form 2 (µs gaps, warehouse/chunks.py), the form the run is staged and
loaded in, and so judge the times at the resolution they are stored at.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from warehouse import chunks

HELPER_COLUMNS = ("chunk_times_ordered", "chunk_times_in_token_window")


def with_helper_columns(table: pa.Table) -> pa.Table:
    """`table` (staged form 2) with chunk_times replaced by the two helper columns.

    chunk_times_ordered: every gap >= 0, the first one included (the first chunk is not before sent_at).
    chunk_times_in_token_window: every chunk's offset, rebuilt as sent_at // 1000 + running sum (µs),
    within [first_token_at // 1000, last_token_at // 1000]. A chunk recorded while either bound is null,
    or a null gap, is False. Empty or null list: both True.
    """
    if not chunks.is_us_gaps(table.schema):
        raise ValueError(
            "requests table is not in staged form 2 (chunk_times as µs gaps): stage it first "
            "(warehouse/chunks.py to_staged)"
        )
    n = table.num_rows
    v, gaps, parents, value_null = chunks.gaps_to_offsets_us(table.column("chunk_times"), table.column("sent_at"))
    unordered = np.zeros(n, dtype=bool)
    unordered[parents[(gaps < 0) | value_null]] = True

    lo, lo_null = _int_with_nulls(table.column("first_token_at"))
    hi, hi_null = _int_with_nulls(table.column("last_token_at"))
    lo, hi = lo // chunks.NS_PER_US, hi // chunks.NS_PER_US
    outside = value_null | lo_null[parents] | hi_null[parents]
    outside |= (v < lo[parents]) | (v > hi[parents])
    out_of_window = np.zeros(n, dtype=bool)
    out_of_window[parents[outside]] = True

    return (
        table.drop_columns(["chunk_times"])
        .append_column(HELPER_COLUMNS[0], pa.array(~unordered))
        .append_column(HELPER_COLUMNS[1], pa.array(~out_of_window))
    )


def _int_with_nulls(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    nulls = column.is_null().to_numpy(zero_copy_only=False)
    values = column.fill_null(0).to_numpy().astype(np.int64, copy=False)
    return values, nulls
