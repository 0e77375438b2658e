-- Rivet state, version 1: execution cursor, chunk checkpoints, files, metrics, schema.
-- Timestamps are TEXT, ISO 8601 UTC with a 'Z' suffix and microseconds (sortable as text).

CREATE TABLE export_state (
    export_name       TEXT PRIMARY KEY,
    last_cursor_value TEXT,        -- the single execution cursor (ADR-0008 PG1)
    cursor_column     TEXT,
    cursor_identity   TEXT,        -- what the cursor was read from (relation + cursor expression)
    cursor_run_id     TEXT,        -- run that last moved the cursor
    cursor_updated_at TEXT,
    last_run_id       TEXT,
    last_run_at       TEXT,
    last_status       TEXT
);

CREATE SEQUENCE chunk_run_seq;
CREATE TABLE chunk_run (
    run_id       TEXT PRIMARY KEY,
    seq          BIGINT NOT NULL DEFAULT nextval('chunk_run_seq'),  -- creation order (timestamps can tie)
    export_name  TEXT NOT NULL,
    plan_hash    TEXT,
    status       TEXT NOT NULL CHECK (status IN ('in_progress', 'completed', 'failed')),
    chunk_column TEXT,
    created_at   TEXT NOT NULL,
    finished_at  TEXT,
    chunk_count  INTEGER NOT NULL
);

CREATE TABLE chunk_task (
    run_id       TEXT NOT NULL,
    chunk_index  INTEGER NOT NULL,
    lo           TEXT,
    hi           TEXT,
    status       TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'completed', 'failed')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    rows_written BIGINT,
    file_path    TEXT,
    error        TEXT,
    started_at   TEXT,
    finished_at  TEXT,
    PRIMARY KEY (run_id, chunk_index)
);

CREATE SEQUENCE file_log_seq;
CREATE TABLE file_log (
    id           BIGINT PRIMARY KEY DEFAULT nextval('file_log_seq'),
    export_name  TEXT NOT NULL,
    run_id       TEXT NOT NULL,
    path         TEXT NOT NULL,
    rows         BIGINT NOT NULL,
    size_bytes   BIGINT NOT NULL,
    content_hash TEXT,
    chunk_index  INTEGER,
    format       TEXT,
    compression  TEXT,
    status       TEXT NOT NULL DEFAULT 'committed' CHECK (status IN ('committed', 'superseded')),
    created_at   TEXT NOT NULL
);

CREATE SEQUENCE export_metrics_seq;
CREATE TABLE export_metrics (
    id            BIGINT PRIMARY KEY DEFAULT nextval('export_metrics_seq'),
    export_name   TEXT NOT NULL,
    run_id        TEXT,
    mode          TEXT,
    status        TEXT,
    started_at    TEXT,
    finished_at   TEXT,
    duration_ms   BIGINT,
    rows          BIGINT,
    files         INTEGER,
    bytes         BIGINT,
    retries       INTEGER,
    error_code    TEXT,
    error_message TEXT
);

CREATE TABLE export_schema (
    export_name TEXT PRIMARY KEY,
    columns     TEXT NOT NULL,     -- JSON [{"name": ..., "type": ...}]
    fingerprint TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
