-- What the provider's answer said a completed task cost, beside cost_final_micros (what the
-- key was charged). They differ when the provider billed more than the task reserved of
-- its key's budget: the charge is clamped to the reservation, and an operator sees the
-- under-estimate here. NULL for tasks completed before this migration.
ALTER TABLE tasks ADD COLUMN provider_reported_micros BIGINT;
