-- Migration 4: request rows that fail the validation gate are kept apart instead of refusing the run.
-- Released migrations are never edited: add the next file.
--
-- runs.validation (JSON, migration 1) keeps the gate's full report; runs.validation_status says what the
-- gate decided, for filtering:
--   'passed'       every row passed; all of them are in `requests`
--   'failed_rows'  some request rows failed a row-level expectation: they are in `rejected_requests`, the
--                  rest in `requests`. v_nightly and v_comparison leave such runs out (warehouse/README.md).
--   NULL           no verdict recorded: a run loaded without a validation report (store.load_run called
--                  without one), or an older run whose stored report does not say it passed.
-- A run the gate refuses whole (a failure that is not about single rows) is never loaded, so it has no value.
-- DuckDB cannot add a column with a CHECK (see migration 2): the writer (warehouse/store.py) sets only
-- these values.
ALTER TABLE runs ADD COLUMN validation_status VARCHAR;
-- Before this migration a run was loaded only when the gate passed it whole: its stored report says so.
UPDATE runs SET validation_status = 'passed'
WHERE validation IS NOT NULL AND json_extract(validation, '$.success') = 'true'::JSON;

-- One row per rejected request: which expectations it failed (their names as the report gives them, e.g.
-- 'expect_column_values_to_be_in_set(status)', 'expect_column_values_to_not_be_null(first_token_at) where
-- status == ''ok'''), and the whole staged row as JSON (the staged form of tasks/records.py: chunk_times as
-- ns offsets from the cell start), so nothing measured is lost.
CREATE TABLE rejected_requests (
    run_id              VARCHAR NOT NULL,
    request_id          VARCHAR NOT NULL,
    failed_expectations VARCHAR[] NOT NULL,
    record              JSON NOT NULL,
    PRIMARY KEY (run_id, request_id)
);
