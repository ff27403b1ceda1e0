-- Security review (issue 19): every video of a task is copied, a task whose completing
-- write the store keeps refusing ends instead of holding its slot, and a submit that
-- never reached the provider is told apart from one whose answer was lost.

-- One copy per video of a task (Kling's Omni models return one; a provider may return
-- more). The primary key becomes (task_id, video_index), which needs a new table on
-- SQLite; rows already there are video 0, their object keys unchanged.
CREATE TABLE result_copies_by_video (
    task_id          TEXT NOT NULL REFERENCES tasks (id),
    -- The video's position in the task's result.videos.
    video_index      BIGINT NOT NULL DEFAULT 0,
    source_url       TEXT NOT NULL,
    state            TEXT NOT NULL,
    object_key       TEXT NOT NULL,
    bytes            BIGINT,
    content_type     TEXT,
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    lease_owner      TEXT,
    lease_until      BIGINT NOT NULL DEFAULT 0,
    last_error       TEXT,
    created_at       BIGINT NOT NULL,
    stored_at        BIGINT,
    PRIMARY KEY (task_id, video_index)
);
INSERT INTO result_copies_by_video (task_id, video_index, source_url, state, object_key, bytes,
    content_type, attempts, next_attempt_at, lease_owner, lease_until, last_error, created_at, stored_at)
SELECT task_id, 0, source_url, state, object_key, bytes, content_type, attempts, next_attempt_at,
    lease_owner, lease_until, last_error, created_at, stored_at FROM result_copies;
DROP TABLE result_copies;
ALTER TABLE result_copies_by_video RENAME TO result_copies;
CREATE INDEX result_copies_due ON result_copies (next_attempt_at) WHERE state IN ('pending', 'delete_pending');

-- The stored copies of videos 1, 2, ... (video 0's bytes stay in stored_bytes): a run of
-- JSON objects `{"index":i,"bytes":n}`, each followed by a comma, appended as each copy
-- is verified, so that a task read needs no join (like history_json).
ALTER TABLE tasks ADD COLUMN stored_videos_json TEXT;

-- Completing writes of this task the store refused in a row; at a bound the task fails
-- (store_refused) instead of being polled, and holding its key's slot, for ever. Counted
-- here, not in memory: several gateway processes share the database.
ALTER TABLE tasks ADD COLUMN store_refusals BIGINT NOT NULL DEFAULT 0;

-- Set just before a submit's provider call. A task left submitting without it never
-- reached any provider and is submitted safely again; with it, the outcome is unknown.
ALTER TABLE tasks ADD COLUMN submit_started_at BIGINT;
-- Unfinished submits written before this mark existed may have been sent: marked.
UPDATE tasks SET submit_started_at = created_at WHERE state IN ('submitting', 'submit_unknown');
