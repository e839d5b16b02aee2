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

-- cancellation (any workload's cancel_share): cancel_after_ns, the delay after sent_at the client was to
-- close the stream at (NULL: the request was not picked); cancelled_at, ns from the cell start when it
-- did, status 'cancelled' and error_class 'client_cancel' (NULL: not picked, or the reply ended first).
ALTER TABLE requests ADD COLUMN cancel_after_ns BIGINT;
ALTER TABLE requests ADD COLUMN cancelled_at BIGINT;

-- multi_turn: session_id, the chat session the request is a turn of, and turn, its place in it (1 = the
-- first); each turn sends the whole conversation so far, so prompt_tokens and cached_prompt_tokens (the
-- server's count) grow by turn.
ALTER TABLE requests ADD COLUMN session_id VARCHAR;
ALTER TABLE requests ADD COLUMN turn INTEGER;

-- reasoning tokens (engines that stream delta.reasoning_content): first_reasoning_at, ns from the cell
-- start of the first chunk with reasoning content (first_token_at stays the first answer chunk), and
-- reasoning_tokens, usage.completion_tokens_details.reasoning_tokens as the server reported it (NULL: not
-- reported). Both NULL for a model that does not reason.
ALTER TABLE requests ADD COLUMN first_reasoning_at BIGINT;
ALTER TABLE requests ADD COLUMN reasoning_tokens INTEGER;
