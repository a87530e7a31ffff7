-- Who consented to take part on a case (rj.consent.given, purpose participation): their later decline is a
-- withdrawal, not a decline, and is not erased as one (rule 7).
CREATE TABLE participation_consents (
    case_id      text NOT NULL,
    person_id    text NOT NULL,
    consented_at timestamptz NOT NULL,
    PRIMARY KEY (case_id, person_id)
);

-- Someone who declined to take part (never having consented), to erase on the case once the grace period
-- (declined_erasure_delay_s) after the case's closure or the decline's recording, whichever is later, has run:
-- every service acts on the decline first. A later consent to take part removes the row.
CREATE TABLE declined_erasures (
    case_id          text NOT NULL,
    person_id        text NOT NULL,
    decline_id       text NOT NULL,
    declined_at      timestamptz NOT NULL,
    recorded_at      timestamptz NOT NULL,
    declined_by_kind text NOT NULL,
    declined_by_id   text NOT NULL,
    PRIMARY KEY (case_id, person_id)
);
