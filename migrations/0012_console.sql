-- The console's sign-in sessions (src/console/session.rs): in the shared store, so every
-- gateway process knows every session and signing out or revoking the key ends it at once.
CREATE TABLE console_sessions (
    -- SHA-256 (hex) of the cookie's token: the token itself is never stored.
    token_hash  TEXT PRIMARY KEY,
    -- The key whose own view this is; NULL for the operator (signed in with the admin token).
    api_key_id  TEXT REFERENCES api_keys (id),
    -- Sent back with every state-changing form (synchronizer token).
    csrf_token  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);

-- The operator's task list filters by provider or state over every key, newest first.
CREATE INDEX tasks_by_provider_created ON tasks (provider, created_at);
CREATE INDEX tasks_by_state_created ON tasks (state, created_at);
