-- Someone who declined or withdrew from taking part, to erase on the case once the grace period
-- (declined_erasure_delay_s) after the case's closure or the decision's recording, whichever is later, has run:
-- every service acts on the decision first. A later consent to take part (the case still open) removes the row.
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
