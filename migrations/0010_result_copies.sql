-- Durable results: a copy of each finished video in omnigate's own object storage, made by
-- a leased worker (like the poller and the webhook outbox), and the facade's deletions.

-- Bytes of the stored copy once it is verified (NULL: no copy to serve). Denormalized from
-- result_copies so that a task read needs no join.
ALTER TABLE tasks ADD COLUMN stored_bytes BIGINT;
-- Set by DELETE /v1/videos/{id}: the task no longer exists for its key (reads and lists
-- answer as if it never did) but stays for usage and billing.
ALTER TABLE tasks ADD COLUMN deleted_at BIGINT;

-- One row per task whose video is to be copied, written in the transaction that completes
-- the task (so a crash cannot lose the copy), then claimed with a lease until stored.
CREATE TABLE result_copies (
    task_id          TEXT PRIMARY KEY REFERENCES tasks (id),
    -- The provider's URL of the video (result.videos[0].url when the task completed).
    source_url       TEXT NOT NULL,
    -- pending | stored | failed (attempts used up, or a refusal no retry can change)
    -- | delete_pending (the client deleted the video; the object is to be removed) | deleted
    state            TEXT NOT NULL,
    -- Where the copy lives in the object store, relative to its prefix.
    object_key       TEXT NOT NULL,
    bytes            BIGINT,
    content_type     TEXT,
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    lease_owner      TEXT,
    lease_until      BIGINT NOT NULL DEFAULT 0,
    last_error       TEXT,
    created_at       BIGINT NOT NULL,
    stored_at        BIGINT
);
CREATE INDEX result_copies_due ON result_copies (next_attempt_at) WHERE state IN ('pending', 'delete_pending');
