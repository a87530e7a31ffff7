-- The indirect RJ release sweep reads this table, not the cases, so it never selects a case that is stuck (an
-- approved item and a past not-before agreement that do not belong together, a held or closed case). One row
-- per approved item that a command read in case order would release once its due time comes: its recipient's
-- chosen time (timing not_before), or, for an item freed by a fact from another topic (a consent, readiness, a
-- verdict), at once (timing on_approval: due since the agreement). The agreement current and covering it, the case
-- open, not held, not pending, ready, the consents current. Derived from the case's state by
-- ``domain.release_watch`` and rewritten in the transaction that changes the case; the state stays the truth.
-- ``next_ask_at``: when the sweep next sends the case's ``rj.indirect.release-due`` command (the due time, then
-- again a while after each send while the row stays), so it is not sent every tick while it waits to be read; a
-- rewrite that keeps an item's due time keeps it too. ``force``: the case's force, carried on that command's
-- envelope like every other record about the case.
CREATE TABLE release_watch (
    case_id     text NOT NULL,
    item_id     text NOT NULL,
    due_at      timestamptz NOT NULL,
    next_ask_at timestamptz NOT NULL,
    force       text,
    PRIMARY KEY (case_id, item_id)
);
CREATE INDEX release_watch_next_ask ON release_watch (next_ask_at);
