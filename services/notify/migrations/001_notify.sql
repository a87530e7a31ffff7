-- One row per case: who is on it and how to reach them (sealed), stops, meetings (services.notify.domain).
CREATE TABLE cases (
    key        text PRIMARY KEY,      -- the case id
    state      jsonb,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Staff's work contact (rj.facilitator.registered): not a participant's personal data.
CREATE TABLE facilitators (
    facilitator_id text PRIMARY KEY,
    email          text,
    display_name   text,
    registered_at  timestamptz NOT NULL
);

-- Where meetings are, and how to arrive (rj.venue.registered).
CREATE TABLE venues (
    venue_id      text PRIMARY KEY,
    name          text NOT NULL,
    address       text,
    arrival       text,
    registered_at timestamptz NOT NULL
);

-- Every message decided, kept (so a replay inserts nothing new): waiting until due, then sending, then how it
-- ended. Messages that wait for quiet hours wait here, never in the outbox, where they would hold up the case's
-- later events. ``intent`` holds who it is for and what it is about, with the recipient sealed under the case's
-- key: with the kind, it could say who withdrew.
CREATE TABLE scheduled_sends (
    notification_id text PRIMARY KEY,
    case_id         text NOT NULL,
    force           text,
    kind            text NOT NULL,
    recipient_kind  text NOT NULL,     -- participant | staff
    channel         text,              -- email | sms | letter; none: no safe channel
    about           text,              -- meeting:<id> | item:<id>, for cancellations
    attempt         int NOT NULL DEFAULT 1,   -- which channel of the person's this is (1: the first chosen)
    urgent          boolean NOT NULL DEFAULT false,
    due_at          timestamptz NOT NULL,
    status          text NOT NULL DEFAULT 'waiting'
                    CHECK (status IN ('waiting', 'sending', 'sent', 'failed', 'uncertain', 'cancelled')),
    tries           int NOT NULL DEFAULT 0,   -- sends tried on this channel (temporary failures retry)
    claimed_at      timestamptz,
    provider_id     text,
    detail          text,                     -- a reason safe to log: no address, no content
    intent          text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);
CREATE INDEX scheduled_sends_due ON scheduled_sends (due_at) WHERE status = 'waiting';
CREATE INDEX scheduled_sends_sending ON scheduled_sends (claimed_at) WHERE status = 'sending';
CREATE INDEX scheduled_sends_case_waiting ON scheduled_sends (case_id) WHERE status IN ('waiting', 'sending');
