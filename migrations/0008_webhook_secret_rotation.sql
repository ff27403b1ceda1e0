-- A rotation issues a new webhook signing secret too; the previous one keeps signing
-- (beside the new one) until previous_valid_until, the API key's own grace period.
ALTER TABLE api_keys ADD COLUMN previous_webhook_secret TEXT;
