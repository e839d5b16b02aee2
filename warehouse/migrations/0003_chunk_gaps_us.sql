-- Migration 3: requests.chunk_times is stored as INTEGER[] of microsecond gaps instead of BIGINT[] of
-- nanosecond offsets from the cell start. Released migrations are never edited: add the next file.
--
-- Why: chunk lists are nearly all of the warehouse's bytes (64-256 values per request). Gaps in µs fit in
-- ~15 bits where offsets in ns need ~35: the file is 37 % smaller, a 1 M-request run loads 1.4x faster
-- (benchmarks/warehouse_bench.py) and ITL (the gaps themselves) needs no arithmetic per element.
-- µs is far below any token gap.
--
-- Layout, per request: chunk_times[1] = first content chunk - sent_at (sent_at NULL: the cell start),
-- chunk_times[k] = chunk k - chunk k-1, each computed on offsets floored to whole µs so that
-- sent_at // 1000 + the running sum gives back every offset (floored to µs) with no drift.
-- ITL (ms) = chunk_times[2:] / 1000. The staged Parquet keeps ns offsets (tasks/records.py); the
-- load converts (warehouse/chunks.py). A gap over 2^31 µs (35 min) cannot be stored and fails the load.
--
-- DuckDB's ALTER ... TYPE ... USING cannot use a lambda that reads another column, so: new column,
-- fill, drop the old one, rename. chunk_times becomes the last column of requests (loads go BY NAME).
ALTER TABLE requests ADD COLUMN chunk_gaps_us INTEGER[];
UPDATE requests SET chunk_gaps_us = list_transform(
    chunk_times,
    lambda x, i: (x // 1000 - CASE WHEN i = 1 THEN coalesce(sent_at, 0) // 1000 ELSE chunk_times[i - 1] // 1000 END)::INTEGER
);
ALTER TABLE requests DROP COLUMN chunk_times;
ALTER TABLE requests RENAME COLUMN chunk_gaps_us TO chunk_times;
COMMENT ON COLUMN requests.chunk_times IS
    'content chunk gaps in microseconds: [1] = first chunk - sent_at, [k] = chunk k - chunk k-1 (see warehouse/README.md)';
