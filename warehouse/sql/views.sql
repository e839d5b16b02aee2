-- Derived metrics, exactly as DESIGN.md defines them. Times in the tables are integer ns from the
-- cell start; the views give milliseconds. Percentiles use linear interpolation (quantile_cont),
-- the same definition as the polars transforms (warehouse/transforms.py).

CREATE OR REPLACE VIEW v_requests AS
SELECT
    r.run_id, r.cell_id, r.request_id, r.prompt_id, r.engine, r.model, r.deployment_id, r.instance_id,
    c.workload_id, c.concurrency, c.repeat, r.max_tokens, r.status, r.error_class,
    r.prompt_tokens, r.completion_tokens, r.cached_prompt_tokens, r.finish_reason,
    (r.first_token_at - r.sent_at) / 1e6                           AS ttft_ms,   -- first non-empty content chunk
    (r.last_token_at - r.sent_at) / 1e6                            AS e2e_ms,    -- last content chunk
    (r.sent_at - r.scheduled_at) / 1e6                             AS queue_ms,  -- coordinated omission shows here
    CASE WHEN r.completion_tokens > 1
         THEN (r.last_token_at - r.first_token_at) / 1e6 / (r.completion_tokens - 1) END AS tpot_ms,
    CASE WHEN r.last_token_at > r.sent_at
         THEN r.completion_tokens / ((r.last_token_at - r.sent_at) / 1e9) END        AS tokens_per_s,
    len(r.chunk_times)                                             AS content_chunks,
    list_transform(r.chunk_times[2:], lambda x, i: (x - r.chunk_times[i]) / 1e6)     AS itl_ms
FROM requests r
JOIN cells c USING (run_id, cell_id);

CREATE OR REPLACE VIEW v_cells AS
WITH req AS (
    SELECT v.*, ru.slo_ttft_ms, ru.slo_tpot_ms, ru.slo_e2e_ms,
           (ru.slo_ttft_ms IS NOT NULL OR ru.slo_tpot_ms IS NOT NULL OR ru.slo_e2e_ms IS NOT NULL) AS has_slo,
           v.status = 'ok'
             AND (ru.slo_ttft_ms IS NULL OR v.ttft_ms <= ru.slo_ttft_ms)
             AND (ru.slo_tpot_ms IS NULL OR coalesce(v.tpot_ms, 0) <= ru.slo_tpot_ms)
             AND (ru.slo_e2e_ms IS NULL OR v.e2e_ms <= ru.slo_e2e_ms) AS meets_slo
    FROM v_requests v JOIN runs ru USING (run_id)
),
itl AS (
    SELECT run_id, cell_id,
           quantile_cont(gap, 0.50) AS itl_ms_p50,
           quantile_cont(gap, 0.95) AS itl_ms_p95,
           quantile_cont(gap, 0.99) AS itl_ms_p99
    FROM (SELECT run_id, cell_id, unnest(itl_ms) AS gap FROM req WHERE status = 'ok')
    GROUP BY ALL
)
SELECT
    c.run_id, c.cell_id, c.deployment_id, c.instance_id, c.engine, c.model, c.workload_id,
    c.load_kind, c.concurrency, c.repeat, c.started_at,
    count(q.request_id)                                          AS requests,
    count(q.request_id) FILTER (q.status = 'ok')                 AS ok,
    count(q.request_id) FILTER (q.status <> 'ok')                AS failed,
    c.wall_ns / 1e9                                              AS wall_s,
    coalesce(sum(q.completion_tokens) FILTER (q.status = 'ok'), 0) AS output_tokens,
    coalesce(sum(q.completion_tokens) FILTER (q.status = 'ok'), 0) / (c.wall_ns / 1e9) AS output_throughput_tps,
    count(q.request_id) FILTER (q.status = 'ok') / (c.wall_ns / 1e9)                  AS request_throughput_rps,
    CASE WHEN bool_or(q.has_slo) THEN count(q.request_id) FILTER (q.meets_slo) / (c.wall_ns / 1e9) END AS goodput_rps,
    avg(q.ttft_ms) FILTER (q.status = 'ok')                      AS ttft_ms_mean,
    quantile_cont(q.ttft_ms, 0.50) FILTER (q.status = 'ok')      AS ttft_ms_p50,
    quantile_cont(q.ttft_ms, 0.90) FILTER (q.status = 'ok')      AS ttft_ms_p90,
    quantile_cont(q.ttft_ms, 0.95) FILTER (q.status = 'ok')      AS ttft_ms_p95,
    quantile_cont(q.ttft_ms, 0.99) FILTER (q.status = 'ok')      AS ttft_ms_p99,
    avg(q.tpot_ms) FILTER (q.status = 'ok')                      AS tpot_ms_mean,
    quantile_cont(q.tpot_ms, 0.50) FILTER (q.status = 'ok')      AS tpot_ms_p50,
    quantile_cont(q.tpot_ms, 0.90) FILTER (q.status = 'ok')      AS tpot_ms_p90,
    quantile_cont(q.tpot_ms, 0.95) FILTER (q.status = 'ok')      AS tpot_ms_p95,
    quantile_cont(q.tpot_ms, 0.99) FILTER (q.status = 'ok')      AS tpot_ms_p99,
    avg(q.e2e_ms) FILTER (q.status = 'ok')                       AS e2e_ms_mean,
    quantile_cont(q.e2e_ms, 0.50) FILTER (q.status = 'ok')       AS e2e_ms_p50,
    quantile_cont(q.e2e_ms, 0.90) FILTER (q.status = 'ok')       AS e2e_ms_p90,
    quantile_cont(q.e2e_ms, 0.95) FILTER (q.status = 'ok')       AS e2e_ms_p95,
    quantile_cont(q.e2e_ms, 0.99) FILTER (q.status = 'ok')       AS e2e_ms_p99,
    any_value(i.itl_ms_p50) AS itl_ms_p50,
    any_value(i.itl_ms_p95) AS itl_ms_p95,
    any_value(i.itl_ms_p99) AS itl_ms_p99
FROM cells c
LEFT JOIN req q USING (run_id, cell_id)
LEFT JOIN itl i USING (run_id, cell_id)
GROUP BY c.run_id, c.cell_id, c.deployment_id, c.instance_id, c.engine, c.model, c.workload_id,
         c.load_kind, c.concurrency, c.repeat, c.started_at, c.wall_ns;
