"""The forms of chunk times: in memory, staged, stored; and the conversions between them.

In memory (tasks/records.py, RequestRecord and `records_to_arrow`): `chunk_times` = int64 ns offsets
of every content chunk from the cell start, as the client stamps them.

Stored (migration 0003): INTEGER µs gaps, the first one from `sent_at` (from the cell start when
`sent_at` is NULL), each later one from the chunk before. Both offsets are floored to whole µs
*before* differencing, so `sent_at // 1000 + running sum` returns each offset floored to µs, with no
drift along the list.

Staged (the requests.parquet a run leaves on disk): *staged form 2*, the stored gaps already, as int32
(int64 for a run that holds a gap that int32 cannot, see below), marked by the Parquet (Arrow) schema
metadata key `bakeoff.chunk_times` = "us_gaps" (`FORM_KEY`). The conversion runs once, at staging time,
in numpy over the flattened list values and the list offsets (`to_staged`), and the load is a plain
`INSERT ... SELECT *`: the INSERT that converted inside DuckDB was 2.3 s of a 6.5 s load of 1 M
requests, and the staged file is half the size. A staged file without the mark was staged by a bakeoff
older than staged form 2 (ns offsets); it is refused (store.read_staged_run), not converted: no
released warehouse or staged run needs that.

int32, not int64, in the staged file: measured on the same 1 M-request run staged both ways and loaded
in the same process (benchmarks/warehouse_bench.py, README's Performance section), the int64 file
loads about 0.5 s slower (4.24 s against 3.68 s, medians of 3; every int32 run faster than every
int64 run, in two benchmark runs), presumably decoding twice the bytes and casting each value to the
table's INTEGER (zstd makes the two files about the same size: 370 and 387 MB). int32 must not make
staging fail, which would lose the night's records: `to_staged` checks the gaps as it converts, and
a run with a gap outside int32 (over 2^31 µs, 35 min; no real stream has one) is staged with int64
gaps instead, whole. Such a run cannot be stored: its load's cast to INTEGER refuses it with a clear
message (`store._insert_requests`), and the staged file stays as it is. The loader reads either
type; the form mark is the same.

Floor, not truncation: numpy's `//` floors, so a negative offset (which no client stamps, and the gate
rejects) still gives gaps that rebuild it exactly.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

NS_PER_US = 1000

# Parquet (Arrow) schema metadata marking the staged form of requests.chunk_times.
FORM_KEY = b"bakeoff.chunk_times"
US_GAPS = b"us_gaps"
STAGED_GAP_TYPE = pa.int32()  # int64 for a run with a gap outside int32 (to_staged)
# Rows converted per step: bounds the numpy temporaries (store.STAGED_ROW_GROUP rows).
_BATCH_ROWS = 128 * 1024


def is_us_gaps(schema: pa.Schema) -> bool:
    """True when a staged requests table (or file schema) holds chunk_times as µs gaps (staged form 2)."""
    return (schema.metadata or {}).get(FORM_KEY) == US_GAPS


def _lists_and_lengths(lists: pa.Array, sent_at: pa.Array) -> tuple[pa.Array, pa.Array, np.ndarray]:
    """(lists, sent_at, each list's length with null lists as 0), as single arrays."""
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    if isinstance(sent_at, pa.ChunkedArray):
        sent_at = sent_at.combine_chunks()
    lengths = pc.list_value_length(lists).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    return lists, sent_at, lengths


def offsets_to_gaps(lists: pa.Array, sent_at: pa.Array) -> pa.ListArray:
    """ns offsets from the cell start (list<int64>) -> µs gaps (list<int64>), one row each:
    [first offset // 1000 - coalesce(sent_at, 0) // 1000, then offset // 1000 - previous offset // 1000].
    A null list stays null, an empty one empty; a null offset gives a null gap, and so does the offset
    after it. Vectorised over the flattened values and the list offsets."""
    lists, sent_at, lengths = _lists_and_lengths(lists, sent_at)
    n = len(lists)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = pc.list_flatten(lists)  # the values of non-null lists, in order (a slice's own values)
    us = np.floor_divide(_numpy(values), NS_PER_US)
    base = np.floor_divide(_numpy(sent_at), NS_PER_US)
    gaps = np.empty_like(us)
    if us.size:
        np.subtract(us[1:], us[:-1], out=gaps[1:])
        starts = offsets[:-1][lengths > 0]
        gaps[starts] = us[starts] - base[lengths > 0]
    mask = None
    if values.null_count:
        missing = values.is_null().to_numpy(zero_copy_only=False)
        mask = missing.copy()
        mask[1:] |= missing[:-1]
        mask[offsets[:-1][lengths > 0]] = missing[offsets[:-1][lengths > 0]]  # a list's first gap: own value only
    gap_values = pa.array(gaps, type=pa.int64(), mask=mask)
    list_mask = lists.is_null() if lists.null_count else None
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), gap_values, mask=list_mask)


def to_staged(requests: pa.Table) -> pa.Table:
    """A requests table in memory (tasks/records.py: ns offsets) -> staged form 2 (µs gaps, marked in
    the schema metadata): list<int32> gaps, or list<int64> when a gap does not fit int32 (never
    fails on a value). A table already in staged form 2 is returned as it is."""
    if is_us_gaps(requests.schema):
        return requests
    field = requests.schema.field("chunk_times")
    if not pa.types.is_list(field.type) or not pa.types.is_integer(field.type.value_type):
        raise TypeError(f"requests.chunk_times is {field.type}, expected a list of int64 ns offsets")
    narrow, wide = pa.list_(STAGED_GAP_TYPE), pa.list_(pa.int64())
    gap_type = narrow
    pieces: list[pa.Array] = []
    for batch in requests.select(["sent_at", "chunk_times"]).to_batches(max_chunksize=_BATCH_ROWS):
        gaps = offsets_to_gaps(batch.column("chunk_times"), batch.column("sent_at"))
        if gap_type == narrow and not _fits(gaps.values, STAGED_GAP_TYPE):
            gap_type, pieces = wide, [p.cast(wide) for p in pieces]
        pieces.append(gaps.cast(gap_type))
    column = pa.chunked_array(pieces, gap_type) if pieces else pa.chunked_array([], gap_type)
    index = requests.schema.get_field_index("chunk_times")
    staged = requests.set_column(index, pa.field("chunk_times", gap_type, nullable=field.nullable), column)
    return staged.replace_schema_metadata({**(requests.schema.metadata or {}), FORM_KEY: US_GAPS})


def _fits(values: pa.Array, type_: pa.DataType) -> bool:
    info = np.iinfo(type_.to_pandas_dtype())
    low, high = pc.min_max(values).values()
    return low.as_py() is None or (info.min <= low.as_py() and high.as_py() <= info.max)


def gaps_to_offsets_us(lists: pa.Array, sent_at: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """µs gaps (staged form 2 or stored) -> each chunk's offset from the cell start in µs, rebuilt as
    coalesce(sent_at, 0) // 1000 + the running sum of the list's gaps. Returns (offsets_us, gaps, parents,
    gap_null) over the flattened values: parents[i] is the row of value i; a null gap counts as 0 in
    the sums (gap_null says where)."""
    lists, sent_at, lengths = _lists_and_lengths(lists, sent_at)
    n = len(lists)
    parents = np.repeat(np.arange(n, dtype=np.int64), lengths)
    values = pc.list_flatten(lists)
    gap_null = values.is_null().to_numpy(zero_copy_only=False)
    gaps = _numpy(values)
    running = np.cumsum(gaps)
    # running sum within each list: subtract the total of the lists before it
    before = np.zeros(n, dtype=np.int64)
    ends = np.cumsum(lengths)
    has_before = ends - lengths > 0
    before[has_before] = running[(ends - lengths)[has_before] - 1]
    base = np.floor_divide(_numpy(sent_at), NS_PER_US)
    offsets_us = running - before[parents] + base[parents]
    return offsets_us, gaps, parents, gap_null


def _numpy(values: pa.Array) -> np.ndarray:
    """int64 numpy view of an integer Arrow array, nulls as 0 (no copy when there is no null)."""
    if values.null_count:
        values = values.fill_null(0)
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.int64)
