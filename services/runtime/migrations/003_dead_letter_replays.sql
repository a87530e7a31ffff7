-- Replays of dead letters: an operator re-injects a letter's original onto its source topic after a fix
-- (`rj deadletters replay`). Recorded before the record is sent; `replayed_to` (topic:partition:offset
-- of the copy sent) is filled in once the broker has it, so a replay recorded with no position was never
-- confirmed sent.
ALTER TABLE dead_letters ADD COLUMN replays integer NOT NULL DEFAULT 0;
ALTER TABLE dead_letters ADD COLUMN replayed_at timestamptz;
ALTER TABLE dead_letters ADD COLUMN replayed_to text;
