-- Who is a registered facilitator, and which are specialists: the consent service's copy of
-- scheduling's rj.facilitator.registered facts. An assignment takes the specialist flag from here,
-- never from the command.
CREATE TABLE facilitators (
    facilitator_id text PRIMARY KEY,
    specialist     boolean NOT NULL,
    registered_at  timestamptz NOT NULL
);
