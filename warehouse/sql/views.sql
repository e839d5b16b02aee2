-- Derived metrics, exactly as DESIGN.md defines them; documented with example queries in
-- warehouse/README.md. Request times in the tables are integer ns from the cell start, chunk_times are
-- µs gaps (migration 0003); the views give milliseconds. Percentiles use linear interpolation
-- (quantile_cont), the same definition as the polars transforms (warehouse/transforms.py).
--
-- Why the views are shaped so:
-- * Percentiles are taken as one quantile_cont(x, [0.5, 0.9, 0.95, 0.99]) per metric: one sort state
--   per metric instead of four.
-- * Pooled ITL percentiles sit in the same aggregate as everything else, as
--   list_aggregate(flatten(list(itl)), ...): DuckDB drops an aggregate nobody selects, so a query that
--   does not ask for ITL never touches the chunk lists (the bulk of the data). A separate
--   unnest + join would be computed for every query.
-- * v_cells passes cells' own columns through (c.*), so columns later migrations add to `cells`
--   appear here without editing this file.
-- * A configuration is what a night measures again the next night: engine, model, deployment,
--   instance, workload and load shape. Keys that may be NULL (concurrency of an open-loop cell, the
--   rate of a closed one) are compared with IS NOT DISTINCT FROM.
-- * Rows the validation gate rejected (rejected_requests, migration 0004) are in no metric: the
--   metrics are over `requests`, which holds the kept rows only. v_cells shows the run's
--   validation_status and each cell's rejected count; v_nightly (and so v_comparison) leaves out runs
--   marked 'failed_rows': percentiles without the dropped rows would silently move night-over-night
--   trends. NULL (no verdict recorded) is kept.

CREATE OR REPLACE VIEW v_requests AS
SELECT
    r.run_id, r.cell_id, r.request_id, r.prompt_id, r.engine, r.model, r.deployment_id, r.instance_id,
    c.workload_id, c.load_kind, c.concurrency, c.repeat, r.max_tokens, r.status, r.error_class,
    r.prompt_tokens, r.completion_tokens, r.cached_prompt_tokens, r.finish_reason,
    r.schema_id, r.response_format, r.output_parsed, r.output_valid, r.validation_error,
    r.cancel_after_ns, r.cancelled_at, r.session_id, r.turn, r.first_reasoning_at, r.reasoning_tokens,
    -- reasoning: the first token of any kind (reasoning or answer); ttft_ms is the first *answer* token
    (least(coalesce(r.first_reasoning_at, r.first_token_at), r.first_token_at) - r.sent_at) / 1e6 AS ttft_any_ms,
    (r.first_reasoning_at - r.sent_at) / 1e6                       AS ttfr_ms,   -- first reasoning token
    (r.cancelled_at - r.sent_at) / 1e6                             AS cancel_ms, -- the client closed the stream
    (r.first_token_at - r.sent_at) / 1e6                           AS ttft_ms,   -- first non-empty content chunk
    (r.last_token_at - r.sent_at) / 1e6                            AS e2e_ms,    -- last content chunk
    (r.sent_at - r.scheduled_at) / 1e6                             AS queue_ms,  -- coordinated omission shows here
    CASE WHEN r.completion_tokens > 1
         THEN (r.last_token_at - r.first_token_at) / 1e6 / (r.completion_tokens - 1) END AS tpot_ms,
    CASE WHEN r.last_token_at > r.sent_at
         THEN r.completion_tokens / ((r.last_token_at - r.sent_at) / 1e9) END        AS tokens_per_s,
    len(r.chunk_times)                                             AS content_chunks,
    -- chunk_times[1] is the gap from sent_at, the rest are the gaps between content chunks (µs)
    list_transform(r.chunk_times[2:], lambda g: g / 1e3)           AS itl_ms,
    -- NULL when the run set no SLO; else ok and within every SLO the run set (TPOT of a 1-token reply: 0)
    CASE WHEN ru.slo_ttft_ms IS NOT NULL OR ru.slo_tpot_ms IS NOT NULL OR ru.slo_e2e_ms IS NOT NULL THEN
        r.status = 'ok'
        AND (ru.slo_ttft_ms IS NULL OR (r.first_token_at - r.sent_at) / 1e6 <= ru.slo_ttft_ms)
        AND (ru.slo_tpot_ms IS NULL OR coalesce(CASE WHEN r.completion_tokens > 1
                 THEN (r.last_token_at - r.first_token_at) / 1e6 / (r.completion_tokens - 1) END, 0) <= ru.slo_tpot_ms)
        AND (ru.slo_e2e_ms IS NULL OR (r.last_token_at - r.sent_at) / 1e6 <= ru.slo_e2e_ms)
    END                                                            AS meets_slo
FROM requests r
JOIN cells c USING (run_id, cell_id)
JOIN runs ru USING (run_id);

-- Each ok request's figures as the other tools define them, from the same raw columns (the table of
-- definitions, with where each comes from in the tools' source: warehouse/README.md, "Metrics in the
-- other tools' definitions"). bakeoff's own: v_requests. What the raw columns cannot give exactly:
-- * done_at is when the read holding [DONE] arrived: SGLang's and GuideLLM's end, and (within the same
--   read, or microseconds) the usage-only chunk that ends vLLM 0.10's latency.
-- * Only content chunks are timed one by one; of the others bakeoff keeps the first event (first_chunk_at),
--   so vLLM 0.10's ITL lacks the gap to the closing finish_reason chunk.
-- * Output lengths are the server's completion_tokens; AIPerf (unless --use-server-token-count) and vLLM or
--   SGLang without usage re-tokenize the text; a per-request list (itl, icl) is pooled over requests.
CREATE OR REPLACE VIEW v_requests_peer AS
SELECT
    r.run_id, r.cell_id, r.request_id, r.engine, r.model, r.deployment_id, r.instance_id,
    c.workload_id, c.load_kind, c.concurrency, c.repeat, r.max_tokens, r.prompt_tokens, r.completion_tokens,
    -- vLLM bench serve, 0.34 (benchmarks/lib/endpoint_request_func.py): first and last chunk with streamed
    -- output (non-empty content; the role chunk does not count); TPOT (latency - ttft) / (tokens - 1); ITL the
    -- gaps between those chunks: bakeoff's own definitions
    (r.first_token_at - r.sent_at) / 1e6                           AS vllm_ttft_ms,
    CASE WHEN r.completion_tokens > 1
         THEN (r.last_token_at - r.first_token_at) / 1e6 / (r.completion_tokens - 1) END AS vllm_tpot_ms,
    list_transform(r.chunk_times[2:], lambda g: g / 1e3)           AS vllm_itl_ms,
    (r.last_token_at - r.sent_at) / 1e6                            AS vllm_e2el_ms,
    -- vLLM 0.10.2 (the study's pin): the first event with a non-empty `choices` is the first token, even the
    -- role chunk with no content; the latency ends at the last event before [DONE] (the usage-only chunk);
    -- ITL the gaps between events with choices, the role chunk -> first content gap included
    (r.first_chunk_at - r.sent_at) / 1e6                           AS vllm_legacy_ttft_ms,
    CASE WHEN r.completion_tokens > 1
         THEN (r.done_at - r.first_chunk_at) / 1e6 / (r.completion_tokens - 1) END AS vllm_legacy_tpot_ms,
    list_concat(CASE WHEN r.first_chunk_at < r.first_token_at
                     THEN [(r.first_token_at - r.first_chunk_at) / 1e6] ELSE [] END,
                list_transform(r.chunk_times[2:], lambda g: g / 1e3)) AS vllm_legacy_itl_ms,
    (r.done_at - r.sent_at) / 1e6                                  AS vllm_legacy_e2el_ms,
    -- SGLang bench_serving (sglang/benchmark/serving.py): first content chunk; latency at the last line read
    -- ([DONE]); TPOT (latency - ttft) / (tokens - 1); ITL the gaps between content chunks
    (r.first_token_at - r.sent_at) / 1e6                           AS sglang_ttft_ms,
    CASE WHEN r.completion_tokens > 1
         THEN (r.done_at - r.first_token_at) / 1e6 / (r.completion_tokens - 1) END AS sglang_tpot_ms,
    list_transform(r.chunk_times[2:], lambda g: g / 1e3)           AS sglang_itl_ms,
    (r.done_at - r.sent_at) / 1e6                                  AS sglang_e2e_ms,
    -- GuideLLM 0.8 (guidellm/schemas/base/request_stats.py): TPOT includes the first token
    -- ((last token - start) / tokens); its ITL is one number per request, bakeoff's TPOT; request latency ends
    -- when the stream has closed after [DONE]
    (r.first_token_at - r.sent_at) / 1e6                           AS guidellm_ttft_ms,
    CASE WHEN r.completion_tokens > 0
         THEN (r.last_token_at - r.sent_at) / 1e6 / r.completion_tokens END AS guidellm_tpot_ms,
    CASE WHEN r.completion_tokens > 1
         THEN (r.last_token_at - r.first_token_at) / 1e6 / (r.completion_tokens - 1) END AS guidellm_itl_ms,
    (r.done_at - r.sent_at) / 1e6                                  AS guidellm_e2e_ms,
    -- NVIDIA AIPerf 0.13 (aiperf/metrics/types/): "ITL" is (request latency - TTFT) / (OSL - 1), bakeoff's TPOT;
    -- the chunk gaps are "ICL"; request latency ends at the last content response
    (r.first_token_at - r.sent_at) / 1e6                           AS aiperf_ttft_ms,
    CASE WHEN r.completion_tokens > 1
         THEN (r.last_token_at - r.first_token_at) / 1e6 / (r.completion_tokens - 1) END AS aiperf_itl_ms,
    list_transform(r.chunk_times[2:], lambda g: g / 1e3)           AS aiperf_icl_ms,
    (r.last_token_at - r.sent_at) / 1e6                            AS aiperf_request_latency_ms
FROM requests r
JOIN cells c USING (run_id, cell_id)
WHERE r.status = 'ok';

CREATE OR REPLACE VIEW v_cells AS
WITH per_cell AS (
    SELECT
        run_id, cell_id,
        count(*)                                              AS requests,
        count(*) FILTER (status = 'ok')                       AS ok,
        sum(completion_tokens) FILTER (status = 'ok')         AS output_tokens,
        count(*) FILTER (meets_slo)                           AS meeting_slo,
        avg(ttft_ms) FILTER (status = 'ok')                   AS ttft_ms_mean,
        quantile_cont(ttft_ms, [0.5, 0.9, 0.95, 0.99]) FILTER (status = 'ok') AS ttft_q,
        avg(tpot_ms) FILTER (status = 'ok')                   AS tpot_ms_mean,
        quantile_cont(tpot_ms, [0.5, 0.9, 0.95, 0.99]) FILTER (status = 'ok') AS tpot_q,
        avg(e2e_ms) FILTER (status = 'ok')                    AS e2e_ms_mean,
        quantile_cont(e2e_ms, [0.5, 0.9, 0.95, 0.99]) FILTER (status = 'ok')  AS e2e_q,
        list_aggregate(flatten(list(itl_ms) FILTER (status = 'ok')), 'quantile_cont', [0.5, 0.9, 0.95, 0.99]) AS itl_q,
        -- validity guards: how warm the prefix cache was (the server's own count), and replies that ended
        -- before max_tokens (under ignore_eos, an engine that dropped it)
        sum(cached_prompt_tokens) FILTER (cached_prompt_tokens IS NOT NULL) /
            nullif(sum(prompt_tokens) FILTER (cached_prompt_tokens IS NOT NULL), 0) AS prefix_hit_share,
        count(*) FILTER (status = 'ok' AND completion_tokens < max_tokens)    AS ended_early,
        -- every content chunk carries a token at least: more chunks than usage's completion_tokens means
        -- the server's count is short (fewer chunks than tokens is normal: engines send several per chunk)
        count(*) FILTER (status = 'ok' AND content_chunks > completion_tokens) AS usage_short,
        -- structured replies: of the ok ones judged against their schema, the share that parsed / validated
        count(*) FILTER (output_parsed) / nullif(count(*) FILTER (output_parsed IS NOT NULL), 0) AS parsed_share,
        count(*) FILTER (output_valid) / nullif(count(*) FILTER (output_valid IS NOT NULL), 0)   AS valid_share,
        -- cancellation: requests picked for it, those the client did cancel (the rest ended first), when
        count(*) FILTER (cancel_after_ns IS NOT NULL)         AS cancel_picked,
        count(*) FILTER (cancelled_at IS NOT NULL)            AS cancelled_by_client,
        quantile_cont(cancel_ms, 0.5)                         AS cancel_ms_p50,
        -- reasoning: Σ reasoning tokens of the ok replies, and P50 time to the first reasoning token
        sum(reasoning_tokens) FILTER (status = 'ok')          AS reasoning_tokens,
        quantile_cont(ttfr_ms, 0.5) FILTER (status = 'ok')    AS ttfr_ms_p50
    FROM v_requests
    GROUP BY run_id, cell_id
),
-- the machine during the cell: per sample, the engines' CPU (every instance sampled) and the rest
host_per_sample AS (
    SELECT run_id, cell_id, sampled_at, max(cpu_util_pct) AS machine, sum(engine_cpu_pct) AS engines,
           sum(engine_rss_bytes) AS rss
    FROM host_samples
    GROUP BY ALL
    HAVING count(engine_cpu_pct) = count(*) AND max(cpu_util_pct) IS NOT NULL
),
-- steal is the machine's, one value per sample whatever the instances
steal AS (
    SELECT run_id, cell_id, avg(stolen) AS steal_pct_mean, max(stolen) AS steal_pct_max
    FROM (SELECT run_id, cell_id, sampled_at, max(steal_pct) AS stolen FROM host_samples GROUP BY run_id, cell_id, sampled_at)
    GROUP BY run_id, cell_id
),
-- lock-step: a closed loop of like requests whose sends come in waves of its concurrency (every slot freed
-- at once, refilled at once): its prompts are prefilled together and its replies decoded together, so its
-- TTFT / TPOT split is a synchronised burst's. A burst: sends within 10 ms of the one before.
bursts AS (
    SELECT run_id, cell_id, burst, count(*) AS size
    FROM (SELECT run_id, cell_id,
                 sum(CASE WHEN gap IS NULL OR gap > 10000000 THEN 1 ELSE 0 END)
                     OVER (PARTITION BY run_id, cell_id ORDER BY sent_at ROWS UNBOUNDED PRECEDING) AS burst
          FROM (SELECT run_id, cell_id, sent_at,
                       sent_at - lag(sent_at) OVER (PARTITION BY run_id, cell_id ORDER BY sent_at) AS gap
                FROM requests WHERE sent_at IS NOT NULL))
    GROUP BY ALL
),
lockstep AS (
    SELECT b.run_id, b.cell_id,
           count(*) FILTER (b.size = c.concurrency)                               AS waves,
           coalesce(sum(b.size) FILTER (b.size = c.concurrency), 0) / sum(b.size) AS lockstep_share
    FROM bursts b JOIN cells c USING (run_id, cell_id)
    WHERE c.load_kind = 'closed' AND c.concurrency >= 2
    GROUP BY ALL
),
host AS (
    SELECT run_id, cell_id,
           avg(engines)                                       AS engine_cpu_pct_mean,
           avg(greatest(machine - engines, 0))                AS other_cpu_pct_mean,
           max(greatest(machine - engines, 0))                AS other_cpu_pct_max,
           max(rss)                                           AS engine_rss_max_bytes
    FROM host_per_sample
    GROUP BY ALL
),
-- the GPU's power during the cell (NVML; summed over the GPUs sampled): NULL on a machine without NVML
gpu_per_sample AS (
    SELECT run_id, cell_id, sampled_at, sum(power_w) AS power_w
    FROM gpu_samples
    GROUP BY ALL
    HAVING count(power_w) = count(*)
),
gpu AS (
    SELECT run_id, cell_id, avg(power_w) AS gpu_power_w_mean
    FROM gpu_per_sample
    GROUP BY ALL
)
SELECT
    c.*,
    coalesce(p.requests, 0)                                   AS requests,
    coalesce(p.ok, 0)                                         AS ok,
    coalesce(p.requests - p.ok, 0)                            AS failed,
    c.wall_ns / 1e9                                           AS wall_s,
    coalesce(p.output_tokens, 0)                              AS output_tokens,
    coalesce(p.output_tokens, 0) / (c.wall_ns / 1e9)          AS output_throughput_tps,
    coalesce(p.ok, 0) / (c.wall_ns / 1e9)                     AS request_throughput_rps,
    CASE WHEN ru.slo_ttft_ms IS NOT NULL OR ru.slo_tpot_ms IS NOT NULL OR ru.slo_e2e_ms IS NOT NULL
         THEN coalesce(p.meeting_slo, 0) / (c.wall_ns / 1e9) END AS goodput_rps,
    p.ttft_ms_mean, p.ttft_q[1] AS ttft_ms_p50, p.ttft_q[2] AS ttft_ms_p90, p.ttft_q[3] AS ttft_ms_p95, p.ttft_q[4] AS ttft_ms_p99,
    p.tpot_ms_mean, p.tpot_q[1] AS tpot_ms_p50, p.tpot_q[2] AS tpot_ms_p90, p.tpot_q[3] AS tpot_ms_p95, p.tpot_q[4] AS tpot_ms_p99,
    p.e2e_ms_mean,  p.e2e_q[1]  AS e2e_ms_p50,  p.e2e_q[2]  AS e2e_ms_p90,  p.e2e_q[3]  AS e2e_ms_p95,  p.e2e_q[4]  AS e2e_ms_p99,
    p.itl_q[1] AS itl_ms_p50, p.itl_q[2] AS itl_ms_p90, p.itl_q[3] AS itl_ms_p95, p.itl_q[4] AS itl_ms_p99,
    p.prefix_hit_share,                                       -- Σ cached / Σ prompt tokens; NULL: not reported
    coalesce(p.ended_early, 0)                                AS ended_early,  -- ok replies short of max_tokens
    p.parsed_share, p.valid_share,                            -- structured: ok replies that parsed / validated; NULL: none judged
    coalesce(p.cancel_picked, 0) AS cancel_picked, coalesce(p.cancelled_by_client, 0) AS cancelled_by_client,
    p.cancel_ms_p50,                                          -- cancellation: picked, cancelled, sent -> cancel
    p.reasoning_tokens, p.ttfr_ms_p50,                        -- reasoning; NULL when the engine reported none
    h.engine_cpu_pct_mean, h.other_cpu_pct_mean, h.other_cpu_pct_max,  -- % of the machine; others = not the engines
    h.engine_rss_max_bytes,                                   -- the engines' resident memory at its highest sample
    st.steal_pct_mean, st.steal_pct_max,                      -- % of the machine a hypervisor took; NULL: not sampled
    coalesce(ls.waves, 0) AS lockstep_waves, ls.lockstep_share,  -- closed loops: sends in waves of the concurrency
    coalesce(p.usage_short, 0)                                AS usage_short,  -- ok replies: more chunks than tokens
    g.gpu_power_w_mean,                                       -- mean of the samples' power (W), every GPU sampled
    g.gpu_power_w_mean * (c.wall_ns / 1e9)                    AS energy_j,  -- mean power × cell wall time
    g.gpu_power_w_mean * (c.wall_ns / 1e9) / nullif(p.output_tokens, 0) AS energy_per_output_token_j,
    ru.validation_status,                                     -- the run's: passed / failed_rows / NULL
    coalesce(rj.rejected, 0)                                  AS rejected   -- this cell's rows in rejected_requests
FROM cells c
JOIN runs ru USING (run_id)
LEFT JOIN per_cell p USING (run_id, cell_id)
LEFT JOIN host h USING (run_id, cell_id)
LEFT JOIN steal st USING (run_id, cell_id)
LEFT JOIN lockstep ls USING (run_id, cell_id)
LEFT JOIN gpu g USING (run_id, cell_id)
LEFT JOIN (SELECT run_id, record ->> 'cell_id' AS cell_id, count(*) AS rejected
           FROM rejected_requests GROUP BY ALL) rj USING (run_id, cell_id);

-- One row per night (run) per configuration; repeats of a configuration are pooled: percentiles over
-- all their ok requests, throughput = Σ tokens / Σ wall time, plus the spread across repeats.
-- Runs marked validation_status = 'failed_rows' are left out (see the note at the top).
CREATE OR REPLACE VIEW v_nightly AS
WITH config AS (
    SELECT run_id, cell_id, wall_ns, engine, model, deployment_id, instance_id, workload_id,
           load_kind, arrival, concurrency, rate_rps, burstiness, max_concurrency, duration_limit_s
    FROM cells
),
pooled AS (
    SELECT
        q.run_id, c.engine, c.model, c.deployment_id, c.instance_id, c.workload_id, c.load_kind, c.arrival,
        c.concurrency, c.rate_rps, c.burstiness, c.max_concurrency, c.duration_limit_s,
        count(*)                                              AS requests,
        count(*) FILTER (q.status = 'ok')                     AS ok,
        coalesce(sum(q.completion_tokens) FILTER (q.status = 'ok'), 0) AS output_tokens,
        count(*) FILTER (q.meets_slo)                         AS meeting_slo,
        avg(q.ttft_ms) FILTER (q.status = 'ok')               AS ttft_ms_mean,
        quantile_cont(q.ttft_ms, [0.5, 0.9, 0.95, 0.99]) FILTER (q.status = 'ok') AS ttft_q,
        avg(q.tpot_ms) FILTER (q.status = 'ok')               AS tpot_ms_mean,
        quantile_cont(q.tpot_ms, [0.5, 0.9, 0.95, 0.99]) FILTER (q.status = 'ok') AS tpot_q,
        avg(q.e2e_ms) FILTER (q.status = 'ok')                AS e2e_ms_mean,
        quantile_cont(q.e2e_ms, [0.5, 0.9, 0.95, 0.99]) FILTER (q.status = 'ok')  AS e2e_q,
        list_aggregate(flatten(list(q.itl_ms) FILTER (q.status = 'ok')), 'quantile_cont', [0.5, 0.9, 0.95, 0.99]) AS itl_q
    FROM v_requests q
    JOIN config c USING (run_id, cell_id)
    GROUP BY q.run_id, c.engine, c.model, c.deployment_id, c.instance_id, c.workload_id, c.load_kind, c.arrival,
             c.concurrency, c.rate_rps, c.burstiness, c.max_concurrency, c.duration_limit_s
),
repeats AS (
    SELECT
        run_id, engine, model, deployment_id, instance_id, workload_id, load_kind, arrival,
        concurrency, rate_rps, burstiness, max_concurrency, duration_limit_s,
        count(*)                    AS repeats,
        sum(wall_s)                 AS wall_s,
        min(output_throughput_tps)  AS output_throughput_tps_min,
        max(output_throughput_tps)  AS output_throughput_tps_max
    FROM v_cells
    GROUP BY ALL
)
SELECT
    r.run_id, (ru.started_at AT TIME ZONE 'UTC')::DATE AS night, ru.started_at, ru.matrix_name,
    r.engine, d.engine_version,                               -- the version that ran that night (deployments)
    r.model, r.deployment_id, r.instance_id, r.workload_id, r.load_kind, r.arrival,
    r.concurrency, r.rate_rps, r.burstiness, r.max_concurrency, r.duration_limit_s,
    r.repeats,
    coalesce(p.requests, 0)                                   AS requests,
    coalesce(p.ok, 0)                                         AS ok,
    coalesce(p.requests - p.ok, 0)                            AS failed,
    r.wall_s,
    coalesce(p.output_tokens, 0)                              AS output_tokens,
    coalesce(p.output_tokens, 0) / r.wall_s                   AS output_throughput_tps,
    r.output_throughput_tps_min, r.output_throughput_tps_max,
    coalesce(p.ok, 0) / r.wall_s                              AS request_throughput_rps,
    CASE WHEN ru.slo_ttft_ms IS NOT NULL OR ru.slo_tpot_ms IS NOT NULL OR ru.slo_e2e_ms IS NOT NULL
         THEN coalesce(p.meeting_slo, 0) / r.wall_s END      AS goodput_rps,
    p.ttft_ms_mean, p.ttft_q[1] AS ttft_ms_p50, p.ttft_q[2] AS ttft_ms_p90, p.ttft_q[3] AS ttft_ms_p95, p.ttft_q[4] AS ttft_ms_p99,
    p.tpot_ms_mean, p.tpot_q[1] AS tpot_ms_p50, p.tpot_q[2] AS tpot_ms_p90, p.tpot_q[3] AS tpot_ms_p95, p.tpot_q[4] AS tpot_ms_p99,
    p.e2e_ms_mean,  p.e2e_q[1]  AS e2e_ms_p50,  p.e2e_q[2]  AS e2e_ms_p90,  p.e2e_q[3]  AS e2e_ms_p95,  p.e2e_q[4]  AS e2e_ms_p99,
    p.itl_q[1] AS itl_ms_p50, p.itl_q[2] AS itl_ms_p90, p.itl_q[3] AS itl_ms_p95, p.itl_q[4] AS itl_ms_p99
FROM repeats r
JOIN runs ru ON ru.run_id = r.run_id AND ru.validation_status IS DISTINCT FROM 'failed_rows'
LEFT JOIN deployments d ON d.run_id = r.run_id AND d.instance_id = r.instance_id
LEFT JOIN pooled p
  ON  p.run_id = r.run_id AND p.engine = r.engine AND p.model = r.model AND p.deployment_id = r.deployment_id
  AND p.instance_id = r.instance_id AND p.workload_id = r.workload_id
  AND p.load_kind IS NOT DISTINCT FROM r.load_kind AND p.arrival IS NOT DISTINCT FROM r.arrival
  AND p.concurrency IS NOT DISTINCT FROM r.concurrency AND p.rate_rps IS NOT DISTINCT FROM r.rate_rps
  AND p.burstiness IS NOT DISTINCT FROM r.burstiness AND p.max_concurrency IS NOT DISTINCT FROM r.max_concurrency
  AND p.duration_limit_s IS NOT DISTINCT FROM r.duration_limit_s;

-- Two instances measured the same night on the same model, workload and load shape: a's figure over
-- b's. throughput_ratio > 1: a is faster; a latency ratio < 1: a is faster. Every ordered pair appears,
-- so filter on engine_a / engine_b (or deployment_a / deployment_b) in whichever order reads best.
-- Intervals for these ratios: warehouse/stats.py (bootstrap_ratio).
CREATE OR REPLACE VIEW v_comparison AS
SELECT
    a.run_id, a.night, a.model, a.workload_id, a.load_kind, a.arrival, a.concurrency, a.rate_rps,
    a.burstiness, a.max_concurrency, a.duration_limit_s,
    a.engine AS engine_a, b.engine AS engine_b,
    a.deployment_id AS deployment_a, b.deployment_id AS deployment_b,
    a.instance_id AS instance_a, b.instance_id AS instance_b,
    a.ok AS ok_a, b.ok AS ok_b,
    a.output_throughput_tps AS output_throughput_tps_a, b.output_throughput_tps AS output_throughput_tps_b,
    a.output_throughput_tps / nullif(b.output_throughput_tps, 0) AS output_throughput_ratio,
    a.request_throughput_rps / nullif(b.request_throughput_rps, 0) AS request_throughput_ratio,
    a.goodput_rps / nullif(b.goodput_rps, 0)                  AS goodput_ratio,
    a.ttft_ms_p50 / nullif(b.ttft_ms_p50, 0) AS ttft_p50_ratio, a.ttft_ms_p90 / nullif(b.ttft_ms_p90, 0) AS ttft_p90_ratio,
    a.ttft_ms_p95 / nullif(b.ttft_ms_p95, 0) AS ttft_p95_ratio, a.ttft_ms_p99 / nullif(b.ttft_ms_p99, 0) AS ttft_p99_ratio,
    a.tpot_ms_p50 / nullif(b.tpot_ms_p50, 0) AS tpot_p50_ratio, a.tpot_ms_p90 / nullif(b.tpot_ms_p90, 0) AS tpot_p90_ratio,
    a.tpot_ms_p95 / nullif(b.tpot_ms_p95, 0) AS tpot_p95_ratio, a.tpot_ms_p99 / nullif(b.tpot_ms_p99, 0) AS tpot_p99_ratio,
    a.e2e_ms_p50 / nullif(b.e2e_ms_p50, 0)   AS e2e_p50_ratio,  a.e2e_ms_p90 / nullif(b.e2e_ms_p90, 0)   AS e2e_p90_ratio,
    a.e2e_ms_p95 / nullif(b.e2e_ms_p95, 0)   AS e2e_p95_ratio,  a.e2e_ms_p99 / nullif(b.e2e_ms_p99, 0)   AS e2e_p99_ratio
FROM v_nightly a
JOIN v_nightly b
  ON  a.run_id = b.run_id AND a.model = b.model AND a.workload_id = b.workload_id
  AND a.load_kind IS NOT DISTINCT FROM b.load_kind AND a.arrival IS NOT DISTINCT FROM b.arrival
  AND a.concurrency IS NOT DISTINCT FROM b.concurrency AND a.rate_rps IS NOT DISTINCT FROM b.rate_rps
  AND a.burstiness IS NOT DISTINCT FROM b.burstiness AND a.max_concurrency IS NOT DISTINCT FROM b.max_concurrency
  AND a.duration_limit_s IS NOT DISTINCT FROM b.duration_limit_s
  AND (a.deployment_id, a.instance_id) <> (b.deployment_id, b.instance_id);
