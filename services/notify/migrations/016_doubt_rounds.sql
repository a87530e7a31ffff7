-- How many times a send in doubt found its provider unreachable (services/notify/sender.py): past the limit it is
-- recorded uncertain and the facilitator told, never left ``sending`` for ever.
ALTER TABLE scheduled_sends ADD COLUMN doubt_rounds int NOT NULL DEFAULT 0;
