-- Capacity (issue 20): provider caps held in the store, so that every gateway process
-- sharing the database sees the same count, and the durable admission queue.

-- One row per configured provider, upserted by each gateway at start. A cap of
-- 9223372036854775807 (i64::MAX) means "none": the conditional UPDATE that takes a slot
-- then needs no NULL branch, which PostgreSQL and SQLite would type differently.
CREATE TABLE provider_capacity (
    provider        TEXT PRIMARY KEY,
    configured_cap  BIGINT NOT NULL,
    per_minute      BIGINT NOT NULL,
    -- Tasks holding a slot here (tasks.slot_provider): submitted and not yet finished.
    in_flight       BIGINT NOT NULL DEFAULT 0,
    -- Lowered after a capacity refusal, raised by one per finished task after the cool-down;
    -- NULL once back at the configured cap.
    effective_cap   BIGINT,
    cooldown_until  BIGINT NOT NULL DEFAULT 0,
    refusals        BIGINT NOT NULL DEFAULT 0,
    minute_start    BIGINT NOT NULL DEFAULT 0,
    minute_submits  BIGINT NOT NULL DEFAULT 0
);

-- The provider whose slot this task holds (given back in the transaction that ends it).
ALTER TABLE tasks ADD COLUMN slot_provider TEXT;
-- Fair-share order (start-time fair queuing tag), priority (0 high, 1 normal, 2 low),
-- and the wait's start and deadline, while the task is 'waiting' (and kept after).
ALTER TABLE tasks ADD COLUMN queue_tag BIGINT;
ALTER TABLE tasks ADD COLUMN queue_priority INTEGER;
ALTER TABLE tasks ADD COLUMN waiting_since BIGINT;
ALTER TABLE tasks ADD COLUMN max_wait_until BIGINT;
CREATE INDEX tasks_waiting_tag ON tasks (queue_tag) WHERE state = 'waiting';
CREATE INDEX tasks_waiting_deadline ON tasks (max_wait_until) WHERE state = 'waiting';
CREATE INDEX tasks_waiting_key ON tasks (api_key_id, queue_priority, waiting_since) WHERE state = 'waiting';

-- A key's share of the queue: its weight, its own bound on waiting tasks (NULL: the
-- config's default), its last fair-share tag, and its waiting tasks (kept exact by the
-- transactions that enqueue and dequeue, so max_queued needs no count).
ALTER TABLE api_keys ADD COLUMN queue_weight BIGINT NOT NULL DEFAULT 1;
ALTER TABLE api_keys ADD COLUMN max_queued BIGINT;
ALTER TABLE api_keys ADD COLUMN queue_tag BIGINT NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN queued BIGINT NOT NULL DEFAULT 0;

-- The queue's virtual time: the tag of the last task dispatched.
CREATE TABLE queue_clock (
    id     INTEGER PRIMARY KEY,
    vtime  BIGINT NOT NULL DEFAULT 0
);
INSERT INTO queue_clock (id, vtime) VALUES (1, 0);
