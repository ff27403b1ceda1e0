-- Key limits in the admission queue (issue 20, item 6): a waiting task whose key is at its
-- max_in_flight is parked, so the dispatcher's claim (through tasks_waiting_ready) skips it
-- without reading it; the transaction that gives back one of the key's slots unparks the
-- key's next parked task (through tasks_waiting_parked). Both stores take this as it is.
ALTER TABLE tasks ADD COLUMN queue_parked INTEGER NOT NULL DEFAULT 0;
CREATE INDEX tasks_waiting_ready ON tasks (queue_tag) WHERE state = 'waiting' AND queue_parked = 0;
CREATE INDEX tasks_waiting_parked ON tasks (api_key_id, queue_priority, waiting_since)
    WHERE state = 'waiting' AND queue_parked = 1;

-- Waiting tasks by key and model, with the oldest wait of each (the gauges worker's
-- metrics and the console's queue view): read from this index alone, never the table.
CREATE INDEX tasks_waiting_by_key_model ON tasks (api_key_id, model, waiting_since)
    WHERE state = 'waiting';
