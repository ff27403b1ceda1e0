-- Idempotency-Key per API key: the same key and body return the same task.
CREATE TABLE idempotency_keys (
    api_key_id    TEXT NOT NULL REFERENCES api_keys (id),
    key           TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    task_id       TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (api_key_id, key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
