-- The Victims' Code's second clock: a referral to a victim support service (or the victim's declining the offer)
-- owed to each victim of a recorded crime within 2 working days of its report. Beside victim_clocks, not in it:
-- the RJ information clock is unchanged.
CREATE TABLE support_clocks (
    force           text NOT NULL,
    crime_reference text NOT NULL,
    person_id       text NOT NULL,
    case_id         text NOT NULL,
    reported_at     timestamptz NOT NULL,
    due_by          timestamptz NOT NULL,
    decided_at      timestamptz,          -- referred, or the offer declined: the clock stopped
    outcome         text,                 -- referred | declined
    breached_at     timestamptz,
    PRIMARY KEY (force, crime_reference, person_id)
);
-- The sweep reads only running clocks, by deadline.
CREATE INDEX support_clocks_running ON support_clocks (due_by) WHERE decided_at IS NULL AND breached_at IS NULL;
CREATE INDEX support_clocks_by_case ON support_clocks (case_id, person_id);

-- The latest risk assessment of each case (consent's rj.risk-assessment.recorded, latest by assessed_at): on a
-- sensitive case no RJ information is recorded as given before it allows contact.
CREATE TABLE risk_assessments (
    case_id         text PRIMARY KEY,
    assessed_at     timestamptz NOT NULL,
    safe_to_proceed boolean NOT NULL
);

-- Cases that ended (closed, or screened out) and their offenders, for reoffending: a later outcome naming one of
-- them (same force, another crime) is a reoffence of the case, recorded once per later crime (`reoffences`).
CREATE TABLE ended_cases (
    case_id         text PRIMARY KEY,
    force           text NOT NULL,
    crime_reference text NOT NULL,
    ended_as        text NOT NULL,        -- closed | screened_out
    closure_reason  text,
    decline_reason  text,
    ended_at        timestamptz NOT NULL,
    offender_ids    text[] NOT NULL,
    reoffences      text[] NOT NULL DEFAULT '{}'
);
CREATE TABLE ended_case_offenders (
    force     text NOT NULL,
    person_id text NOT NULL,
    case_id   text NOT NULL REFERENCES ended_cases (case_id),
    PRIMARY KEY (force, person_id, case_id)
);
