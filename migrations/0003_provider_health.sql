-- Provider health: one circuit-breaker row per provider, shared by every gateway process,
-- and the recent submit and poll outcomes behind its window statistics.
CREATE TABLE provider_circuits (
    provider          TEXT PRIMARY KEY,
    -- closed | open; an open circuit whose opened_until has passed is half-open.
    state             TEXT NOT NULL,
    -- Consecutive failures per phase, so that polls of older tasks cannot mask a
    -- provider that refuses every new submit (or the other way round).
    submit_failures   BIGINT NOT NULL DEFAULT 0,
    poll_failures     BIGINT NOT NULL DEFAULT 0,
    opened_until      BIGINT NOT NULL DEFAULT 0,
    -- The half-open probe slot is held until this time (a crashed prober cannot wedge it).
    probe_until       BIGINT NOT NULL DEFAULT 0,
    -- Failure rates are counted from here, so a circuit that just closed is not reopened
    -- by the failures that opened it.
    closed_at         BIGINT NOT NULL DEFAULT 0,
    last_error_code   TEXT,
    last_error_message TEXT,
    last_error_at     BIGINT,
    updated_at        BIGINT NOT NULL
);

CREATE TABLE provider_outcomes (
    provider    TEXT NOT NULL,
    -- submit | poll
    phase       TEXT NOT NULL,
    -- 1 when the provider answered (including refusals that are the request's fault).
    ok          BIGINT NOT NULL,
    error_code  TEXT,
    latency_ms  BIGINT NOT NULL,
    at          BIGINT NOT NULL
);
CREATE INDEX provider_outcomes_by_provider ON provider_outcomes (provider, phase, at);
CREATE INDEX provider_outcomes_by_age ON provider_outcomes (at);
