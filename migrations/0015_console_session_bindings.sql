-- What each console session signed in with (src/console/session.rs), so that a session ends
-- when that credential stops being valid. Sessions opened before this migration have
-- neither and are refused: their viewers sign in again.
-- A key's session: the SHA-256 of the secret used (the key's key_hash then). After a
-- rotation it is the key's previous_key_hash, and the session ends with the grace period.
ALTER TABLE console_sessions ADD COLUMN secret_hash TEXT;
-- The operator's session: HMAC-SHA256 of the admin token, keyed with the session's own
-- cookie token (which the store never holds). It stops matching when the token changes.
ALTER TABLE console_sessions ADD COLUMN admin_fingerprint TEXT;
