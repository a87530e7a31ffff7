-- What the referral service knows about each crime, and the case it became (if any).
CREATE TABLE crime_files (
    crime_reference     text PRIMARY KEY,
    case_id             text NOT NULL UNIQUE,
    crime               jsonb,          -- the latest crime.recorded payload (holds personal data)
    outcome             jsonb,          -- the latest crime.outcome-recorded payload (holds personal data)
    requests            jsonb NOT NULL DEFAULT '[]',
    status              text NOT NULL DEFAULT 'no_case',
    opened_at           timestamptz,
    clocked_victims     text[] NOT NULL DEFAULT '{}',
    updated_at          timestamptz NOT NULL DEFAULT now()
);

-- The Victims' Code clock: RJ information owed to each victim of a recorded crime.
CREATE TABLE victim_clocks (
    crime_reference text NOT NULL,
    person_id       text NOT NULL,
    case_id         text NOT NULL,
    reported_at     timestamptz NOT NULL,
    due_by          timestamptz NOT NULL,
    enhanced_rights boolean NOT NULL,
    provided_at     timestamptz,
    breached_at     timestamptz,
    PRIMARY KEY (crime_reference, person_id)
);
CREATE INDEX victim_clocks_running ON victim_clocks (due_by) WHERE provided_at IS NULL AND breached_at IS NULL;
CREATE INDEX victim_clocks_by_case ON victim_clocks (case_id, person_id);
