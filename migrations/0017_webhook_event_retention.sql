-- Retention (src/workers/retention.rs) deletes the webhook events whose delivery is final
-- (delivered, failed or disabled), oldest first by their last due time, in small batches:
-- this index finds them without a scan of the outbox.
CREATE INDEX webhook_events_final ON webhook_events (next_attempt_at) WHERE state <> 'pending';
