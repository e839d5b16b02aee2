-- Migration 10: what cancellation, multi-turn sessions and reasoning engines record per request (the
-- columns of the workload kinds after structured output, migration 9).
-- Released migrations are never edited: add the next file.
--
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
