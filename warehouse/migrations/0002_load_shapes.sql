-- Migration 2: open-loop load shapes, per-cell limits, and the client's measurement of its own overhead.
-- Released migrations are never edited: add the next file.

-- load_kind: 'closed' (fixed concurrency) or 'open' (requests sent at a rate, see arrival).
-- Migration 1 pinned it with CHECK (load_kind IN ('closed')), and DuckDB can neither drop nor alter a
-- CHECK. So the pinned column is kept under the name load_kind_v1 (a default fills it; it says nothing
-- and may be ignored) and load_kind is a new, unpinned column holding the same values for old rows.
-- DuckDB cannot add a column with a CHECK either: the writer (tasks/bench.py) checks load_kind.
ALTER TABLE cells RENAME COLUMN load_kind TO load_kind_v1;
ALTER TABLE cells ALTER COLUMN load_kind_v1 SET DEFAULT 'closed';
ALTER TABLE cells ADD COLUMN load_kind VARCHAR;
UPDATE cells SET load_kind = load_kind_v1;

-- The load shape. arrival: 'closed' | 'poisson' | 'gamma' | 'constant'. rate_rps: the open-loop
-- request rate. burstiness: gamma's shape k (coefficient of variation of the gaps = 1/sqrt(k)).
-- max_concurrency: the open-loop cap. duration_limit_s: no request was sent after this (NULL: none).
ALTER TABLE cells ADD COLUMN arrival VARCHAR;
UPDATE cells SET arrival = 'closed';
ALTER TABLE cells ADD COLUMN rate_rps DOUBLE;
ALTER TABLE cells ADD COLUMN burstiness DOUBLE;
ALTER TABLE cells ADD COLUMN max_concurrency INTEGER;
ALTER TABLE cells ADD COLUMN duration_limit_s DOUBLE;

-- The client's own overhead in the cell (tasks/loadgen.py). Send lateness: sent_at minus the moment
-- the request could go (its scheduled time, or when a max_concurrency slot freed up). Loop lag: how
-- much later than asked a 10 ms ticker on the client's event loop woke up. client_kept_up: both p99s
-- at most 2 ms (loadgen.KEPT_UP_P99_MS); NULL for cells measured before this migration.
ALTER TABLE cells ADD COLUMN send_lateness_p50_ms DOUBLE;
ALTER TABLE cells ADD COLUMN send_lateness_p99_ms DOUBLE;
ALTER TABLE cells ADD COLUMN loop_lag_p99_ms DOUBLE;
ALTER TABLE cells ADD COLUMN loop_lag_max_ms DOUBLE;
ALTER TABLE cells ADD COLUMN client_kept_up BOOLEAN;
