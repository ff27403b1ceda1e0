-- Client webhooks as an outbox: each event is written in the transaction that changes the
-- task's status, and delivered (leased like the poller) until a 2xx or the schedule ends.
ALTER TABLE tasks ADD COLUMN callback_url TEXT;
-- 1 when the request asked for in_progress events too.
ALTER TABLE tasks ADD COLUMN callback_in_progress BIGINT NOT NULL DEFAULT 0;
-- The unguessable token in the URL a provider calls back on (NULL: no upstream callback).
ALTER TABLE tasks ADD COLUMN upstream_callback_token TEXT;

CREATE TABLE webhook_events (
    -- The Standard Webhooks message id (webhook-id): msg_<uuid>.
    id               TEXT PRIMARY KEY,
    task_id          TEXT NOT NULL REFERENCES tasks (id),
    api_key_id       TEXT NOT NULL,
    -- Order of the task's events: delivered strictly in this order.
    seq              BIGINT NOT NULL,
    -- video.generation.in_progress | completed | failed
    type             TEXT NOT NULL,
    url              TEXT NOT NULL,
    -- The task's progress when the event happened (the rest is the task as it ended).
    progress         BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    -- pending | delivered | failed (schedule used up) | disabled (410 from the receiver)
    state            TEXT NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    lease_owner      TEXT,
    lease_until      BIGINT NOT NULL DEFAULT 0,
    delivered_at     BIGINT,
    CONSTRAINT webhook_events_task_seq UNIQUE (task_id, seq)
);
CREATE INDEX webhook_events_due ON webhook_events (next_attempt_at) WHERE state = 'pending';

CREATE TABLE webhook_attempts (
    event_id          TEXT NOT NULL REFERENCES webhook_events (id),
    at                BIGINT NOT NULL,
    status_code       BIGINT,
    latency_ms        BIGINT NOT NULL,
    error             TEXT,
    response_excerpt  TEXT
);
CREATE INDEX webhook_attempts_by_event ON webhook_attempts (event_id, at);

-- A receiver that answered 410 Gone gets nothing more from that key.
CREATE TABLE webhook_disabled_urls (
    api_key_id   TEXT NOT NULL,
    url          TEXT NOT NULL,
    disabled_at  BIGINT NOT NULL,
    CONSTRAINT webhook_disabled_urls_pkey PRIMARY KEY (api_key_id, url)
);
