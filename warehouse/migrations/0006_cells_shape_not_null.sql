-- Migration 6: every cell has a load kind and an arrival process.
-- Released migrations are never edited: add the next file.
--
-- Migration 2 added cells.load_kind and cells.arrival as nullable columns (DuckDB cannot add a column
-- with a constraint) and filled them for the rows already there; every writer since sets both. Now
-- the table says so, and the row contract (tasks/records.py CellRow) holds them as required. A row
-- another writer left without them gets what can be known: the kind migration 2 kept, arrival
-- 'closed' for a closed-loop cell, 'unknown' for an open-loop one (its arrival was never recorded).
UPDATE cells SET load_kind = load_kind_v1 WHERE load_kind IS NULL;
UPDATE cells SET arrival = CASE WHEN load_kind = 'closed' THEN 'closed' ELSE 'unknown' END WHERE arrival IS NULL;
ALTER TABLE cells ALTER COLUMN load_kind SET NOT NULL;
ALTER TABLE cells ALTER COLUMN arrival SET NOT NULL;
