-- When the channel was called for a send (services/notify/sender.py): set, under the row's lock, in the same
-- transaction that finds the case still lets the message go. A stop cancels the case's ``sending`` rows whose
-- channel has not been called yet (a claim between two steps), never one that may already have gone out.
ALTER TABLE scheduled_sends ADD COLUMN send_started_at timestamptz;
