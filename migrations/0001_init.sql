-- Portable SQL: the same migrations run on PostgreSQL and on the embedded SQLite store.
-- Times are unix milliseconds (BIGINT) so one set of queries serves PostgreSQL and SQLite.
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    key_hash    TEXT NOT NULL,
    key_prefix  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT,
    CONSTRAINT api_keys_key_hash_key UNIQUE (key_hash)
);

CREATE TABLE tasks (
    id                      TEXT PRIMARY KEY,
    api_key_id              TEXT NOT NULL REFERENCES api_keys (id),
    model                   TEXT NOT NULL,
    request                 TEXT NOT NULL,
    -- submitting | submit_unknown | queued | in_progress | completed | failed
    state                   TEXT NOT NULL,
    progress                BIGINT NOT NULL DEFAULT 0,
    provider                TEXT,
    provider_task_id        TEXT,
    sandbox                 BIGINT NOT NULL DEFAULT 0,
    result                  TEXT,
    error_code              TEXT,
    error_message           TEXT,
    error_provider_message  TEXT,
    -- Money in whole micro-dollars: exact, and free of float binding quirks.
    cost_estimated_micros   BIGINT,
    cost_final_micros       BIGINT,
    routing_reason          TEXT,
    metadata                TEXT,
    created_at              BIGINT NOT NULL,
    updated_at              BIGINT NOT NULL,
    completed_at            BIGINT,
    next_poll_at            BIGINT NOT NULL,
    poll_failures           BIGINT NOT NULL DEFAULT 0,
    lease_owner             TEXT,
    lease_until             BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX tasks_by_owner ON tasks (api_key_id, created_at DESC, id DESC);
CREATE INDEX tasks_due ON tasks (next_poll_at) WHERE state IN ('submitting', 'submit_unknown', 'queued', 'in_progress');

CREATE TABLE task_status_changes (
    task_id  TEXT NOT NULL REFERENCES tasks (id),
    status   TEXT NOT NULL,
    at       BIGINT NOT NULL
);
CREATE INDEX task_status_changes_by_task ON task_status_changes (task_id, at);

CREATE TABLE task_attempts (
    task_id     TEXT NOT NULL REFERENCES tasks (id),
    provider    TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    error_code  TEXT,
    message     TEXT,
    latency_ms  BIGINT NOT NULL,
    at          BIGINT NOT NULL
);
CREATE INDEX task_attempts_by_task ON task_attempts (task_id, at);
