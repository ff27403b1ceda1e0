-- The status read's own copy of a task's status history and submit attempts, so that the
-- hottest read is one primary-key lookup instead of two aggregating subqueries. Each is a
-- run of JSON objects, each followed by a comma, appended by the same statement or
-- transaction that writes the row in task_status_changes or task_attempts (which stay,
-- for the console and the reconciler). NULL for tasks written before this migration:
-- their reads aggregate the tables as before.
ALTER TABLE tasks ADD COLUMN history_json TEXT;
ALTER TABLE tasks ADD COLUMN attempts_json TEXT;
