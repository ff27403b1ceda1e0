-- The Kling-shaped facade (issue 22).

-- Tasks created through a facade other than omnigate's own API: the shape their callbacks
-- are rendered in at delivery ('kling'), and the caller's external_task_id, unique per key
-- (NULLs are distinct on both databases, so tasks without one never collide). A row is
-- written just before its task (same id), so a create that dies in between leaves a row
-- without a task, which a later create with the same external_task_id may take over.
CREATE TABLE facade_tasks (
    task_id           TEXT PRIMARY KEY,
    api_key_id        TEXT NOT NULL,
    callback_shape    TEXT NOT NULL,
    external_task_id  TEXT,
    created_at        BIGINT NOT NULL
);
CREATE UNIQUE INDEX facade_tasks_external_id ON facade_tasks (api_key_id, external_task_id);

-- Kling-style credentials of an API key: an access key (the JWT's iss) and its secret
-- key, sealed with AES-256-GCM under server.secrets_key (never stored in the clear).
CREATE TABLE kling_credentials (
    access_key     TEXT PRIMARY KEY,
    api_key_id     TEXT NOT NULL REFERENCES api_keys (id),
    secret_sealed  TEXT NOT NULL,
    created_at     BIGINT NOT NULL
);
CREATE INDEX kling_credentials_by_key ON kling_credentials (api_key_id);
