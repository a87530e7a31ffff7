-- Agreement items the follow-up sweep must look at next, so a sweep reads an index, not every case: one row
-- per item not completed and not yet flagged overdue, on a case not paused (held, awaiting a withdrawal's
-- verdict, closed). ``flag`` is what it is flagged next: 'due-soon' (looked at once the due date comes within
-- the working days ahead) or 'overdue' (once the due date has passed). Derived from the case's state by
-- ``domain.watched`` and rewritten whenever the case changes; the state stays the truth.
CREATE TABLE item_watch (
    case_id  text NOT NULL,
    item_id  text NOT NULL,
    due_date date NOT NULL,
    flag     text NOT NULL CHECK (flag IN ('due-soon', 'overdue')),
    PRIMARY KEY (case_id, item_id)
);
CREATE INDEX item_watch_due ON item_watch (due_date);

-- Agreements recorded before follow-up existed: every open item of an open, unpaused case is watched from
-- the start (its due-soon reminder, or its overdue fact if the date has passed).
INSERT INTO item_watch (case_id, item_id, due_date, flag)
SELECT c.key, item->>'item_id', (item->>'due_date')::date, 'due-soon'
  FROM cases c, jsonb_array_elements(c.state->'agreement'->'items') AS item
 WHERE jsonb_typeof(c.state->'agreement') = 'object'
   AND jsonb_typeof(c.state->'closure') IS DISTINCT FROM 'object'
   AND coalesce((c.state->>'held')::boolean, false) = false
   AND coalesce(jsonb_array_length(c.state->'stops_pending'), 0) = 0
   AND jsonb_typeof(item->'completed_at') IS DISTINCT FROM 'string';
