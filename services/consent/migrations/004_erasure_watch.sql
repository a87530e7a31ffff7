-- Rule 7: the erasure sweep reads this table, not the cases. One row per person on a case who declined or
-- withdrew from taking part and has not consented again: their erasure becomes due ``declined_erasure_delay_s``
-- after ``recorded_at`` (when the decline was recorded). Derived from the case's state by
-- ``domain.erasure_watch`` and rewritten in the transaction that changes the case; the state stays the truth.
-- ``requested_at``: when the sweep last sent the case's ``rj.consent.erasures-due`` command, so it is not sent
-- again every tick while it waits to be read.
CREATE TABLE erasure_watch (
    case_id      text NOT NULL,
    person_id    text NOT NULL,
    recorded_at  timestamptz NOT NULL,
    requested_at timestamptz,
    PRIMARY KEY (case_id, person_id)
);
CREATE INDEX erasure_watch_due ON erasure_watch (recorded_at, case_id, person_id);
