-- Rule 7: the erasure sweep reads this table, not the cases. One row per person on a case who declined or
-- withdrew from taking part and has not consented again: their erasure becomes due ``declined_erasure_delay_s``
-- after ``recorded_at`` (when the decline was recorded). Derived from the case's state by
-- ``domain.erasure_watch`` and rewritten in the transaction that changes the case; the state stays the truth.
-- ``requested_at``: when the sweep last sent the case's ``rj.consent.erasures-due`` command, so it is not sent
-- again every tick while it waits to be read. ``force``: the case's, which that command carries as every event
-- about a case does (none while the case's force is not known).
CREATE TABLE erasure_watch (
    case_id      text NOT NULL,
    person_id    text NOT NULL,
    recorded_at  timestamptz NOT NULL,
    requested_at timestamptz,
    force        text,
    PRIMARY KEY (case_id, person_id)
);
CREATE INDEX erasure_watch_due ON erasure_watch (recorded_at, case_id, person_id);

-- People who declined or withdrew before pending erasures were kept in the state: their case's state has no
-- ``erasures_pending``, and the case may never change again (closed). Watch them from their decision's time, as
-- ``domain.erasures_from_before`` derives their pending erasure when the state is next loaded.
INSERT INTO erasure_watch (case_id, person_id, recorded_at, force)
SELECT DISTINCT ON (c.key, d ->> 'person_id') c.key, d ->> 'person_id', (d ->> 'decided_at')::timestamptz,
       c.state ->> 'force'
FROM cases c, jsonb_array_elements(c.state -> 'consents') AS d
WHERE c.state IS NOT NULL AND NOT c.state ? 'erasures_pending'
  AND d ->> 'purpose' = 'participation' AND d ->> 'status' IN ('declined', 'withdrawn');
