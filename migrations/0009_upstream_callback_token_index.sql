-- The upstream intake finds a task by the token in the URL a provider calls back on
-- (tasks.upstream_callback_token, added by 0007): one indexed lookup, and never two tasks
-- with one token. NULLs (tasks without an upstream callback) do not collide.
CREATE UNIQUE INDEX tasks_upstream_callback_token ON tasks (upstream_callback_token);
