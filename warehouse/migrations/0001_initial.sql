-- Migration 1: the first schema (runs, deployments, cells, requests, telemetry samples).
-- Released migrations are never edited: add the next file.

CREATE TABLE runs (
    run_id          VARCHAR PRIMARY KEY,
    matrix_name     VARCHAR NOT NULL,
    matrix_path     VARCHAR NOT NULL,
    matrix_sha256   VARCHAR NOT NULL,
    started_at      TIMESTAMPTZ NOT NULL,
    finished_at     TIMESTAMPTZ,
    status          VARCHAR NOT NULL CHECK (status IN ('completed', 'partial', 'failed')),
    bakeoff_version VARCHAR,
    git_sha         VARCHAR,
    host            VARCHAR,
    gpu_name        VARCHAR,
    gpu_driver      VARCHAR,
    slo_ttft_ms     DOUBLE,
    slo_tpot_ms     DOUBLE,
    slo_e2e_ms      DOUBLE,
    validation      JSON
);

CREATE TABLE deployments (
    run_id                VARCHAR NOT NULL,
    instance_id           VARCHAR NOT NULL,
    deployment_id         VARCHAR NOT NULL,
    start_order           INTEGER NOT NULL,
    engine                VARCHAR NOT NULL,
    engine_kind           VARCHAR NOT NULL,
    engine_version        VARCHAR,
    model                 VARCHAR NOT NULL,
    model_path            VARCHAR,
    launcher              VARCHAR NOT NULL,
    flags                 VARCHAR[],
    memory_share          DOUBLE CHECK (memory_share > 0 AND memory_share <= 1),
    started               BOOLEAN NOT NULL,
    failure_class         VARCHAR,
    failure_message       VARCHAR,
    log_excerpt           VARCHAR,
    startup_s             DOUBLE CHECK (startup_s >= 0),
    measured_memory_bytes BIGINT,
    memory_flag           VARCHAR,   -- the engine's own flag as the planner set it, e.g. --mem-fraction-static 0.4962
    predicted_budget_bytes BIGINT,
    predicted_kv_bytes    BIGINT,
    predicted_fit         BOOLEAN,
    prediction_note       VARCHAR,
    image                 VARCHAR,
    PRIMARY KEY (run_id, instance_id),
    CHECK (started OR failure_class IS NOT NULL)
);

CREATE TABLE cells (
    run_id           VARCHAR NOT NULL,
    cell_id          VARCHAR NOT NULL,
    deployment_id    VARCHAR NOT NULL,
    instance_id      VARCHAR NOT NULL,
    engine           VARCHAR NOT NULL,
    model            VARCHAR NOT NULL,
    workload_id      VARCHAR NOT NULL,
    load_kind        VARCHAR NOT NULL CHECK (load_kind IN ('closed')),
    concurrency      INTEGER CHECK (concurrency >= 1),
    repeat           INTEGER NOT NULL CHECK (repeat >= 0),
    requests_planned INTEGER NOT NULL CHECK (requests_planned >= 0),
    warmup_requests  INTEGER NOT NULL CHECK (warmup_requests >= 0),
    started_at       TIMESTAMPTZ NOT NULL,
    wall_ns          BIGINT NOT NULL CHECK (wall_ns >= 0),
    PRIMARY KEY (run_id, cell_id)
);

CREATE TABLE requests (
    run_id               VARCHAR NOT NULL,
    cell_id              VARCHAR NOT NULL,
    request_id           VARCHAR NOT NULL,
    prompt_id            VARCHAR NOT NULL,
    engine               VARCHAR NOT NULL,
    model                VARCHAR NOT NULL,
    deployment_id        VARCHAR NOT NULL,
    instance_id          VARCHAR NOT NULL,
    max_tokens           INTEGER NOT NULL CHECK (max_tokens > 0),
    cell_started_at      TIMESTAMPTZ NOT NULL,
    scheduled_at         BIGINT NOT NULL CHECK (scheduled_at >= 0),
    sent_at              BIGINT CHECK (sent_at >= scheduled_at),
    first_chunk_at       BIGINT CHECK (first_chunk_at >= sent_at),
    first_token_at       BIGINT CHECK (first_token_at >= first_chunk_at),
    last_token_at        BIGINT CHECK (last_token_at >= first_token_at),
    done_at              BIGINT CHECK (done_at >= sent_at),
    chunk_times          BIGINT[],
    prompt_tokens        INTEGER CHECK (prompt_tokens >= 0),
    completion_tokens    INTEGER CHECK (completion_tokens >= 0),
    cached_prompt_tokens INTEGER CHECK (cached_prompt_tokens >= 0),
    status               VARCHAR NOT NULL CHECK (status IN ('ok', 'http_error', 'timeout', 'disconnected', 'bad_stream', 'cancelled')),
    error_class          VARCHAR,
    error_message        VARCHAR,
    http_status          INTEGER,
    finish_reason        VARCHAR,
    PRIMARY KEY (run_id, request_id),
    CHECK (status <> 'ok' OR (first_token_at IS NOT NULL AND last_token_at IS NOT NULL))
);

CREATE TABLE gpu_samples (
    run_id             VARCHAR NOT NULL,
    cell_id            VARCHAR NOT NULL,
    sampled_at         TIMESTAMPTZ NOT NULL,
    gpu_index          INTEGER NOT NULL,
    memory_used_bytes  BIGINT NOT NULL CHECK (memory_used_bytes >= 0),
    memory_total_bytes BIGINT NOT NULL CHECK (memory_total_bytes > 0),
    gpu_util_pct       INTEGER CHECK (gpu_util_pct BETWEEN 0 AND 100),
    memory_util_pct    INTEGER CHECK (memory_util_pct BETWEEN 0 AND 100),
    power_w            DOUBLE,
    temperature_c      INTEGER,
    sm_clock_mhz       INTEGER
);

CREATE TABLE host_samples (
    run_id           VARCHAR NOT NULL,
    cell_id          VARCHAR NOT NULL,
    sampled_at       TIMESTAMPTZ NOT NULL,
    instance_id      VARCHAR,
    cpu_util_pct     DOUBLE CHECK (cpu_util_pct BETWEEN 0 AND 100),
    load1            DOUBLE,
    engine_rss_bytes BIGINT
);

CREATE TABLE builds (
    run_id        VARCHAR NOT NULL,
    image         VARCHAR NOT NULL,   -- name:content-hash tag
    dockerfile    VARCHAR NOT NULL,
    content_hash  VARCHAR NOT NULL,
    status        VARCHAR NOT NULL CHECK (status IN ('built', 'cached', 'failed')),
    attempts      INTEGER NOT NULL CHECK (attempts >= 0),
    seconds       DOUBLE CHECK (seconds >= 0),
    image_id      VARCHAR,
    error_class   VARCHAR,
    error_message VARCHAR,
    log_path      VARCHAR,
    PRIMARY KEY (run_id, image)
);

CREATE TABLE engine_metrics (
    run_id      VARCHAR NOT NULL,
    cell_id     VARCHAR NOT NULL,
    instance_id VARCHAR NOT NULL,
    phase       VARCHAR NOT NULL CHECK (phase IN ('before', 'after')),
    scraped_at  TIMESTAMPTZ NOT NULL,
    metric      VARCHAR NOT NULL,
    labels      VARCHAR,   -- JSON object of the sample's labels
    value       DOUBLE
);
