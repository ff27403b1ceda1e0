-- Per-key limits and the counters that enforce them race-free inside the task's own
-- transactions: tasks in flight, and money reserved and spent per budget period.
ALTER TABLE api_keys ADD COLUMN team TEXT;
-- Requests per minute and burst for creates; reads have their own per-minute limit.
ALTER TABLE api_keys ADD COLUMN rpm BIGINT;
ALTER TABLE api_keys ADD COLUMN burst BIGINT;
ALTER TABLE api_keys ADD COLUMN read_rpm BIGINT;
ALTER TABLE api_keys ADD COLUMN max_in_flight BIGINT;
-- USD budget in micro-dollars per period: month | day (UTC calendar).
ALTER TABLE api_keys ADD COLUMN budget_micros BIGINT;
ALTER TABLE api_keys ADD COLUMN budget_period TEXT NOT NULL DEFAULT 'month';
-- Tasks of this key not yet terminal (kept by the same transactions that change states).
ALTER TABLE api_keys ADD COLUMN in_flight BIGINT NOT NULL DEFAULT 0;
-- Standard Webhooks signing secret (whsec_...), for client callbacks.
ALTER TABLE api_keys ADD COLUMN webhook_secret TEXT;
-- After a rotation the previous secret stays valid until previous_valid_until.
ALTER TABLE api_keys ADD COLUMN previous_key_hash TEXT;
ALTER TABLE api_keys ADD COLUMN previous_valid_until BIGINT;
CREATE INDEX api_keys_previous_hash ON api_keys (previous_key_hash);

-- Money per key and period: reserved (estimates of unfinished tasks) and spent (settled).
CREATE TABLE key_spend (
    api_key_id      TEXT NOT NULL REFERENCES api_keys (id),
    period_start    BIGINT NOT NULL,
    reserved_micros BIGINT NOT NULL DEFAULT 0,
    spent_micros    BIGINT NOT NULL DEFAULT 0,
    CONSTRAINT key_spend_pkey PRIMARY KEY (api_key_id, period_start)
);

-- Which budget period a task's money belongs to (NULL when its key had no budget).
ALTER TABLE tasks ADD COLUMN budget_period_start BIGINT;
-- 1 while the task holds one of its key's in-flight slots.
ALTER TABLE tasks ADD COLUMN holds_slot BIGINT NOT NULL DEFAULT 0;
-- What the task reserved of its key's budget (released or settled when it ends).
ALTER TABLE tasks ADD COLUMN reserved_micros BIGINT;
