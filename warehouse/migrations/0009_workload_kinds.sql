-- Migration 9: what the workload kinds beyond prompts / shared_prefix / random record per request.
-- Released migrations are never edited: add the next file.
--
-- structured (tasks/structured.py): schema_id, the schema the request's reply is judged against (NULL:
-- not a structured request); response_format, what the request asked the engine for ('json_schema',
-- 'json_object'; NULL: unconstrained, the twin that sends the same prompts without it); output_parsed,
-- whether the reply is one JSON value; output_valid, whether it validates against its schema (the
-- jsonschema library, the schema's own draft); validation_error, the first reason it does not (a JSON
-- error or the best jsonschema error, 300 characters at most). output_parsed and output_valid are NULL
-- for a request that did not end ok (no whole reply to judge). Rows of older runs have NULL.
ALTER TABLE requests ADD COLUMN schema_id VARCHAR;
ALTER TABLE requests ADD COLUMN response_format VARCHAR;
ALTER TABLE requests ADD COLUMN output_parsed BOOLEAN;
ALTER TABLE requests ADD COLUMN output_valid BOOLEAN;
ALTER TABLE requests ADD COLUMN validation_error VARCHAR;
