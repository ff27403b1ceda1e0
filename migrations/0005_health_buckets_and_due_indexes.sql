-- Provider health statistics as per-second buckets instead of one row per outcome, so the
-- stored rows grow with time and gateway processes, not with traffic. Each process counts
-- outcomes in memory and writes its own buckets' totals about once a second (a flush that
-- is repeated writes the same totals); routing reads everyone's buckets about once a second.
CREATE TABLE provider_health_buckets (
    provider        TEXT NOT NULL,
    -- submit | poll
    phase           TEXT NOT NULL,
    -- Unix milliseconds at which the one-second bucket starts.
    bucket_start    BIGINT NOT NULL,
    -- The gateway process that counted these outcomes.
    instance        TEXT NOT NULL,
    -- Outcomes where the provider answered (including refusals that are the request's fault).
    ok              BIGINT NOT NULL,
    -- Outcomes that count against the provider.
    failed          BIGINT NOT NULL,
    latency_sum_ms  BIGINT NOT NULL,
    -- Latencies as "ms:count,..." (exact below 128 ms, 7 significant bits above).
    latency_hist    TEXT NOT NULL,
    CONSTRAINT provider_health_buckets_pkey PRIMARY KEY (provider, phase, bucket_start, instance)
);
CREATE INDEX provider_health_buckets_by_age ON provider_health_buckets (bucket_start);

-- Only a window's worth (minutes) of outcomes was ever kept: nothing worth carrying over.
DROP TABLE provider_outcomes;

-- One due-task index per claim query (poller: queued, in_progress; reconciler: submitting,
-- submit_unknown), each with exactly its query's state list: SQLite uses a partial index
-- only when the query repeats its WHERE, so with the one shared index every tick scanned
-- the whole tasks table (cost growing with tasks stored). Keep these lists in step with
-- Store::claim_due.
DROP INDEX tasks_due;
CREATE INDEX tasks_due_poll ON tasks (next_poll_at) WHERE state IN ('queued', 'in_progress');
CREATE INDEX tasks_due_reconcile ON tasks (next_poll_at) WHERE state IN ('submitting', 'submit_unknown');
