-- Hardening of the task path: resubmits counted (at most one), status answers that could
-- not be interpreted counted and kept, the provider's task id on the attempt that got it,
-- and retention of finished tasks' details.
ALTER TABLE tasks ADD COLUMN resubmits BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN unreadable_answers BIGINT NOT NULL DEFAULT 0;
-- The last answer that could not be interpreted, truncated.
ALTER TABLE tasks ADD COLUMN last_unreadable_answer TEXT;
-- Set when retention deleted the request body, status history and attempts.
ALTER TABLE tasks ADD COLUMN details_pruned_at BIGINT;
ALTER TABLE task_attempts ADD COLUMN provider_task_id TEXT;
CREATE INDEX tasks_finished ON tasks (updated_at) WHERE state IN ('completed', 'failed') AND details_pruned_at IS NULL;
