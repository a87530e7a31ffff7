-- Each notification of a case (a message to one person on one channel, services/notify) at its latest state, folded
-- from the rj.notify facts by services/api/readmodel.py, for the case page's "Notifications" section.
--
-- Who it went to is personal data on the facts (recipient_id, sealed under the case's key: with the kind it can say
-- who withdrew), so it is kept here only inside ``recipient``, sealed as it travelled; every plain column is free of
-- it. The state moves forward only (services/api/folding.py NOTIFICATION_STATE_RANK), whatever order the facts came in.

CREATE TABLE IF NOT EXISTS notifications (
    case_id         text NOT NULL,
    notification_id text NOT NULL,
    kind            text NOT NULL,
    recipient_kind  text NOT NULL,
    recipient       jsonb NOT NULL,   -- {"recipient_id": <sealed>}: a person id or a facilitator id
    channel         text,             -- none when no channel was safe
    due_at          timestamptz,      -- from the scheduled fact, whenever it comes
    state           text NOT NULL CHECK (state IN ('scheduled', 'sent', 'failed', 'uncertain', 'cancelled')),
    reason_code     text,             -- why it failed or was cancelled
    next_channel    text,             -- after a failure, the channel tried next (a notification of its own)
    updated_at      timestamptz NOT NULL,  -- when the state shown was decided
    PRIMARY KEY (case_id, notification_id)
);
