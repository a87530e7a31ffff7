-- The indirect RJ release sweep reads this table, not the cases, so it never selects a case that is stuck (an
-- approved item and a past not-before agreement that do not belong together, a held or closed case). One row
-- per approved item that waits only for its recipient's chosen time (timing not_before): the agreement current and covering it, the case open, not held, not pending, ready, the
-- consents current. Derived from the case's state by ``domain.release_watch`` and rewritten in the transaction
-- that changes the case; the state stays the truth. ``requested_at``: when the sweep last sent the case's
-- ``rj.indirect.release-due`` command, so it is not sent again every tick while it waits to be read.
CREATE TABLE release_watch (
    case_id      text NOT NULL,
    item_id      text NOT NULL,
    due_at       timestamptz NOT NULL,
    requested_at timestamptz,
    PRIMARY KEY (case_id, item_id)
);
CREATE INDEX release_watch_due ON release_watch (due_at, case_id, item_id);
