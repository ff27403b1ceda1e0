-- The live task API (issue 21).

-- Event types a task's client does not want delivered (`webhook_events`), as a bit set of
-- public statuses (1 in_progress, 2 completed, 4 failed, 8 cancelled); 0 delivers all.
-- Such events are still recorded, in state 'filtered', and never claimed for delivery.
ALTER TABLE tasks ADD COLUMN webhook_muted BIGINT NOT NULL DEFAULT 0;

-- Changes to finished tasks that gateways caching them must drop them for (a stored copy
-- made, the task deleted), read back by every process for a short while; old rows are
-- pruned by the reader that finds them.
CREATE TABLE finished_task_changes (
    task_id  TEXT NOT NULL,
    at       BIGINT NOT NULL
);
CREATE INDEX finished_task_changes_at ON finished_task_changes (at);
