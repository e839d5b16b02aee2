-- Migration 8: why a night that ran to its end is still not a green night.
-- Released migrations are never edited: add the next file.
--
-- failure: one line, NULL for a night that measured what it should. Set (with status 'failed') when no
-- instance started, no request was sent, or more than the matrix's max_failed_share of the requests
-- failed (tasks/runs.measured_too_little). Rows of older runs have NULL.
ALTER TABLE runs ADD COLUMN failure VARCHAR;
