-- Polls timed by experience and health from outcomes (issue 21, items 5 and 6).

-- When a provider accepted the task, the group its completion time is counted in
-- (`model|mode|seconds`), and the p50-based completion time expected at acceptance
-- (NULL without history). Written by the acceptance's own statement.
ALTER TABLE tasks ADD COLUMN accepted_at BIGINT;
ALTER TABLE tasks ADD COLUMN timing_key TEXT;
ALTER TABLE tasks ADD COLUMN eta_at BIGINT;

-- Each provider's completion times per group (accepted to completed, in ms), from the
-- last finished tasks; replaced as a whole by whichever gateway process refreshes them.
CREATE TABLE completion_times (
    provider     TEXT NOT NULL,
    timing_key   TEXT NOT NULL,
    p10_ms       BIGINT NOT NULL,
    p50_ms       BIGINT NOT NULL,
    p90_ms       BIGINT NOT NULL,
    samples      BIGINT NOT NULL,
    refreshed_at BIGINT NOT NULL,
    PRIMARY KEY (provider, timing_key)
);

-- Each provider's outcomes after acceptance over the health window, refreshed with them.
CREATE TABLE provider_task_outcomes (
    provider             TEXT PRIMARY KEY,
    completed            BIGINT NOT NULL,
    failed_after_accept  BIGINT NOT NULL,
    moderated            BIGINT NOT NULL,
    stuck                BIGINT NOT NULL,
    refreshed_at         BIGINT NOT NULL
);

-- Who refreshes: one process per period takes the turn with a conditional update.
CREATE TABLE completion_times_refresh (
    id           INTEGER PRIMARY KEY,
    refreshed_at BIGINT NOT NULL
);
INSERT INTO completion_times_refresh (id, refreshed_at) VALUES (1, 0);
