-- Migration 5: why a rate sweep stopped, on the cell after which it stopped.
-- Released migrations are never edited: add the next file.
--
-- sweep_stop_reason: set on the last cell of a sweep that a stop rule ended early (its error share or
-- p99 TTFT, in words with the figures and the limit, e.g. 'p99 TTFT 812.0 ms > stop_ttft_factor 5 x the
-- lowest rate''s p50 TTFT 95.2 ms'), or on the saturation cell when no request completed there. NULL on
-- every other cell, and on the last cell of a sweep that ran all of its rates.
ALTER TABLE cells ADD COLUMN sweep_stop_reason VARCHAR;
