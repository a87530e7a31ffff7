-- Retention's sweep takes cases in turn (the least recently looked at first), so that cases with nothing due
-- yet (one role's period still running) can never keep it from reaching the ones that are due.
ALTER TABLE cases ADD COLUMN swept_at timestamptz;
CREATE INDEX cases_to_sweep ON cases (swept_at NULLS FIRST, closed_at)
    WHERE closed_at IS NOT NULL AND retention_erased_at IS NULL;
