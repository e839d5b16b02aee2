"""The stored form of chunk times (µs gaps) and its conversions, on hand-written lists."""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import pytest

from tests.builders import cell_row, record, stage
from warehouse import store
from warehouse.chunks import gaps_us_to_offsets_ns, to_stored

NS = pa.list_(pa.int64())


def test_gaps_by_hand_with_nulls_empties_and_chunked_input():
    table = pa.table({
        "sent_at": pa.chunked_array([[5_500_999, 0, 3], [None]], pa.int64()),
        "chunk_times": pa.chunked_array([pa.array([[10_000_000, 21_999_999, 30_000_000], None, []], NS),
                                         pa.array([[7_000, 7_999]], NS)]),
    })
    got = to_stored(table)
    assert got.schema.field("chunk_times").type == pa.list_(pa.int32())
    # floored to µs first: sent 5500, chunks 10000, 21999, 30000; NULL sent_at counts from the cell start
    assert got.column("chunk_times").to_pylist() == [[4_500, 11_999, 8_001], None, [], [7, 0]]


def test_round_trip_gives_offsets_floored_to_the_microsecond():
    table = pa.table({"sent_at": pa.array([5_500_999, None]),
                      "chunk_times": pa.array([[10_000_001, 21_999_999, 30_000_000], [2_500]], NS)})
    back = pl.from_arrow(to_stored(table)).select(gaps_us_to_offsets_ns())["chunk_times"].to_list()
    assert back == [[10_000_000, 21_999_000, 30_000_000], [2_000]]


def test_the_load_stores_gaps(tmp_path, warehouse):
    store.load_run(warehouse, stage(tmp_path, [record(0, sent_ms=5.5, chunks_ms=(10, 21.999, 30))], [cell_row()]))
    assert warehouse.execute("SELECT chunk_times FROM requests").fetchall() == [([4_500, 11_999, 8_001],)]
    # the load relaxes insertion order for speed, and puts the setting back
    assert warehouse.execute("SELECT current_setting('preserve_insertion_order')").fetchall() == [(True,)]


def test_a_gap_too_large_for_int32_is_refused_with_a_clear_message(tmp_path, warehouse):
    huge = record(0, chunks_ms=(10, 10 + 2_200_000_000 / 1000))  # 2.2e9 µs between two chunks
    with pytest.raises(store.WarehouseError, match="does not fit requests.chunk_times"):
        store.load_run(warehouse, stage(tmp_path, [huge], [cell_row()]))
    assert warehouse.execute("SELECT count(*) FROM runs").fetchall()[0][0] == 0
    assert warehouse.execute("SELECT current_setting('preserve_insertion_order')").fetchall() == [(True,)]
