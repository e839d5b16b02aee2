"""The forms of chunk times (warehouse/chunks.py): in memory (ns offsets), staged form 2 and stored (µs
gaps), the conversion, the load, and the refusal of a run staged before staged form 2, on hand-written
lists."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.records import records_to_arrow
from tests.builders import cell_row, record, stage
from warehouse import chunks, store
from warehouse.chunks import gaps_to_offsets_us, to_staged

NS = pa.list_(pa.int64())


def _by_hand_table() -> pa.Table:
    return pa.table(
        {
            "sent_at": pa.chunked_array([[5_500_999, 0, 3], [None, 7]], pa.int64()),
            "chunk_times": pa.chunked_array(
                [
                    pa.array([[10_000_000, 21_999_999, 30_000_000], None, []], NS),
                    pa.array([[7_000, 7_999], [999, 1_000, 1_999, 2_000]], NS),
                ]
            ),
            "other": pa.array(["a", "b", "c", "d", "e"]),
        }
    )


# Floored to µs first, then differenced: sent 5500 µs, chunks 10000, 21999, 30000 (differencing the ns
# first would give 4499 for the first gap); NULL sent_at counts from the cell start; 999 ns and 1000 ns
# are 1 µs apart once floored, 1999 and 2000 too.
BY_HAND_GAPS = [[4_500, 11_999, 8_001], None, [], [7, 0], [0, 1, 0, 1]]


def test_staging_converts_ns_offsets_to_us_gaps_by_hand():
    table = _by_hand_table()
    staged = to_staged(table)
    assert staged.schema.field("chunk_times").type == pa.list_(pa.int32())
    assert staged.schema.metadata == {b"bakeoff.chunk_times": b"us_gaps"}
    assert chunks.is_us_gaps(staged.schema) and not chunks.is_us_gaps(table.schema)
    assert staged.column("chunk_times").to_pylist() == BY_HAND_GAPS
    assert staged.select(["sent_at", "other"]).equals(table.select(["sent_at", "other"]))
    # converting twice is converting once
    assert to_staged(staged) is staged


def test_staging_a_slice_and_an_empty_table():
    table = _by_hand_table()
    assert to_staged(table.slice(3, 2)).column("chunk_times").to_pylist() == BY_HAND_GAPS[3:]
    assert to_staged(table.slice(1, 2)).column("chunk_times").to_pylist() == BY_HAND_GAPS[1:3]
    empty = to_staged(table.slice(0, 0))
    assert empty.num_rows == 0 and chunks.is_us_gaps(empty.schema)


def test_a_null_offset_gives_a_null_gap_and_so_does_the_next_one():
    table = pa.table(
        {"sent_at": pa.array([1_000], pa.int64()), "chunk_times": pa.array([[2_000, None, 5_000, 9_000]], NS)}
    )
    assert to_staged(table).column("chunk_times").to_pylist() == [[1, None, None, 4]]


def test_staging_refuses_a_chunk_times_column_that_is_not_integer_offsets():
    with pytest.raises(TypeError, match="expected a list of int64 ns offsets"):
        to_staged(pa.table({"sent_at": pa.array([0], pa.int64()), "chunk_times": pa.array([["x"]])}))


def test_a_gap_outside_int32_stages_the_whole_run_as_int64_gaps(monkeypatch):
    monkeypatch.setattr(chunks, "_BATCH_ROWS", 2)  # the big gap in the third batch: the first two widen too
    offsets = [[1_000], [2_000, 3_000], None, [], [0, 2_147_483_648_000], [5_000]]
    table = pa.table({"sent_at": pa.array([0] * 6, pa.int64()), "chunk_times": pa.array(offsets, NS)})
    staged = to_staged(table)
    assert staged.schema.field("chunk_times").type == pa.list_(pa.int64())
    assert [c.type for c in staged.column("chunk_times").chunks] == [pa.list_(pa.int64())] * 3
    assert staged.column("chunk_times").to_pylist() == [[1], [2, 1], None, [], [0, 2_147_483_648], [5]]
    # the largest gap that fits stays int32; so does the smallest
    fits = pa.table(
        {
            "sent_at": pa.array([0, 2_147_483_648_000], pa.int64()),
            "chunk_times": pa.array([[2_147_483_647_999], [0]], NS),
        }
    )
    staged = to_staged(fits)
    assert staged.schema.field("chunk_times").type == pa.list_(pa.int32())
    assert staged.column("chunk_times").to_pylist() == [[2_147_483_647], [-2_147_483_648]]


def test_no_drift_rebuilding_offsets_from_gaps_gives_each_offset_floored_to_the_microsecond():
    # 2,000 chunks 1,234,567 ns apart plus sub-µs noise: every difference has a fraction of a µs, so
    # gaps of unfloored differences would drift by up to a µs a chunk; floored first, there is none.
    offsets = [[17_123_456 + k * 1_234_567 + (k * 389) % 1000 for k in range(2_000)], [5_000_999], [], None]
    sent = [17_000_999, None, 3, 4]
    table = pa.table({"sent_at": pa.array(sent, pa.int64()), "chunk_times": pa.array(offsets, NS)})
    staged = to_staged(table)
    rebuilt, gaps, parents, gap_null = gaps_to_offsets_us(staged.column("chunk_times"), staged.column("sent_at"))
    assert rebuilt.tolist() == [o // 1000 for o in offsets[0]] + [5_000]
    assert parents.tolist() == [0] * 2_000 + [1] and not gap_null.any()
    assert gaps[0] == 17_123 - 17_000 and gaps.sum() == offsets[0][-1] // 1000 - 17_000 + 5_000
    # (differencing the ns first and flooring each difference would have drifted this far)
    naive = 17_000 + sum((b - a) // 1000 for a, b in zip([sent[0], *offsets[0]], offsets[0], strict=False))
    assert offsets[0][-1] // 1000 - naive > 500


def test_round_trip_gives_offsets_floored_to_the_microsecond():
    table = pa.table(
        {
            "sent_at": pa.array([5_500_999, None]),
            "chunk_times": pa.array([[10_000_001, 21_999_999, 30_000_000], [2_500]], NS),
        }
    )
    staged = to_staged(table)
    rebuilt, _, parents, _ = gaps_to_offsets_us(staged.column("chunk_times"), staged.column("sent_at"))
    assert rebuilt.tolist() == [10_000, 21_999, 30_000, 2] and parents.tolist() == [0, 0, 0, 1]


def test_the_staged_file_carries_the_form(tmp_path):
    run_dir = stage(tmp_path, [record(0, sent_ms=5.5, chunks_ms=(10, 21.999, 30))], [cell_row()])
    path = run_dir / "requests.parquet"
    assert pq.read_metadata(path).metadata[b"bakeoff.chunk_times"] == b"us_gaps"  # Parquet key-value metadata
    staged = pq.read_table(path)
    assert chunks.is_us_gaps(staged.schema)
    assert staged.schema.field("chunk_times").type == pa.list_(pa.int32())
    assert staged.column("chunk_times").to_pylist() == [[4_500, 11_999, 8_001]]


def test_the_load_stores_gaps(tmp_path, warehouse):
    store.load_run(warehouse, stage(tmp_path, [record(0, sent_ms=5.5, chunks_ms=(10, 21.999, 30))], [cell_row()]))
    assert warehouse.execute("SELECT chunk_times FROM requests").fetchall() == [([4_500, 11_999, 8_001],)]
    # the load relaxes insertion order for speed, and puts the setting back
    assert warehouse.execute("SELECT current_setting('preserve_insertion_order')").fetchall() == [(True,)]


def test_a_run_staged_before_staged_form_2_is_refused_in_one_line(tmp_path, warehouse):
    """requests.parquet with ns offsets and no form mark (an older bakeoff's staging): not loaded, not
    converted, nothing written."""
    records = [record(0, sent_ms=5.5, chunks_ms=(10, 21.999, 30))]
    run_dir = stage(tmp_path, records, [cell_row()])
    store._write_parquet(records_to_arrow(records), run_dir / "requests.parquet")
    for load in (lambda: store.load_run(warehouse, run_dir), lambda: store.gate_and_load(warehouse, run_dir)):
        with pytest.raises(store.WarehouseError, match="staged by an older bakeoff") as err:
            load()
        assert "\n" not in str(err.value)
    assert warehouse.execute("SELECT count(*) FROM runs").fetchall() == [(0,)]


def test_a_gap_too_large_for_int32_is_refused_with_a_clear_message_and_the_staged_file_kept(tmp_path, warehouse):
    huge = record(0, chunks_ms=(10, 10 + 2_200_000_000 / 1000))  # 2.2e9 µs between two chunks
    run_dir = stage(tmp_path, [huge], [cell_row()])
    before = (run_dir / "requests.parquet").read_bytes()
    with pytest.raises(store.WarehouseError, match=r"does not fit requests\.chunk_times"):
        store.load_run(warehouse, run_dir)
    assert warehouse.execute("SELECT count(*) FROM runs").fetchall()[0][0] == 0
    assert warehouse.execute("SELECT current_setting('preserve_insertion_order')").fetchall() == [(True,)]
    assert (run_dir / "requests.parquet").read_bytes() == before
    # staging did not fail: the gap is in the file, whole (this run staged as int64 gaps)
    staged = pq.read_table(run_dir / "requests.parquet")
    assert staged.schema.field("chunk_times").type == pa.list_(pa.int64())
    assert staged.column("chunk_times").to_pylist() == [[10_000, 2_200_000_000]]
