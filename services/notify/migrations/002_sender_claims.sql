-- Which sender process claimed a send. Each sender holds a session-level advisory lock on its own id while it
-- lives (services.notify.sender.SenderLife); a row ``sending`` whose claimer's lock is free belongs to a process
-- that is gone, and is in doubt at once, not only after the lease.
CREATE SEQUENCE sender_ids AS integer CYCLE;
ALTER TABLE scheduled_sends ADD COLUMN claimed_by integer;
