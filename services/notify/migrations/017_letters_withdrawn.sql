-- A queued letter a stop (withdrawal, hold, erasure, a cancelled meeting) took back before it was printed: it is
-- no longer listed to print, and printing it is refused (services/notify/channels/letters.py).
ALTER TABLE letters ADD COLUMN withdrawn_at timestamptz, ADD COLUMN withdrawn_reason text;
