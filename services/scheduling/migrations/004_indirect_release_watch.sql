-- The indirect RJ release sweep reads this table, not the cases (it replaces 003's index, which found every case
-- with any approved item and any past not-before agreement, whether or not they belonged together, and so
-- selected stuck cases for ever). One row per approved item that waits only for its recipient's chosen time
-- (timing not_before): the agreement current and covering it, the case open, not held, not pending, ready, the
-- consents current. Derived from the case's state by ``domain.release_watch`` and rewritten in the transaction
-- that changes the case; the state stays the truth. ``requested_at``: when the sweep last sent the case's
-- ``rj.indirect.release-due`` command, so it is not sent again every tick while it waits to be read.
DROP INDEX IF EXISTS cases_indirect_items_waiting;

CREATE TABLE release_watch (
    case_id      text NOT NULL,
    item_id      text NOT NULL,
    due_at       timestamptz NOT NULL,
    requested_at timestamptz,
    PRIMARY KEY (case_id, item_id)
);
CREATE INDEX release_watch_due ON release_watch (due_at, case_id, item_id);

-- Items approved before the table existed: watched if they might be waiting for a time. Over-inclusive on
-- purpose (readiness and consent are not checked here): a case named wrongly gets one release-due command,
-- which releases nothing, and its rows are then rewritten from its state.
INSERT INTO release_watch (case_id, item_id, due_at)
SELECT c.key, item->>'item_id', min((a->>'not_before')::timestamptz)
  FROM cases c,
       jsonb_array_elements(coalesce(c.state->'indirect'->'items', '[]'::jsonb)) AS item,
       jsonb_array_elements(coalesce(c.state->'indirect'->'agreements', '[]'::jsonb)) AS a
 WHERE item->>'status' = 'approved'
   AND a->>'person_id' = item->>'recipient_id'
   AND a->>'timing' = 'not_before'
   AND jsonb_typeof(a->'not_before') = 'string'
   AND jsonb_typeof(a->'stopped_at') IS DISTINCT FROM 'string'
   AND jsonb_typeof(c.state->'closure') IS DISTINCT FROM 'object'
   AND coalesce((c.state->>'held')::boolean, false) = false
 GROUP BY c.key, item->>'item_id';
