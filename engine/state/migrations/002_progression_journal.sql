-- Rivet state, version 2: export progression (ADR-0008, columns exactly as specified) and the run journal.

CREATE TABLE export_progression (
    export_name TEXT PRIMARY KEY,
    last_committed_strategy TEXT,
    last_committed_cursor TEXT,
    last_committed_chunk_index INTEGER,
    last_committed_run_id TEXT,
    last_committed_at TEXT,
    last_verified_strategy TEXT,
    last_verified_cursor TEXT,
    last_verified_chunk_index INTEGER,
    last_verified_run_id TEXT,
    last_verified_at TEXT
);

CREATE SEQUENCE run_journal_seq;
CREATE TABLE run_journal (
    id          BIGINT PRIMARY KEY DEFAULT nextval('run_journal_seq'),
    export_name TEXT NOT NULL,
    run_id      TEXT,
    "at"        TEXT NOT NULL,     -- quoted: AT is a keyword in DuckDB
    event       TEXT NOT NULL,
    payload     TEXT              -- JSON object
);
