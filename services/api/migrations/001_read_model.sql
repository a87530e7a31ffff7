-- The API's read model: what staff UIs read, folded from rj.referral, rj.consent, rj.scheduling and rj.privacy by
-- services/api/readmodel.py. Personal values are kept as they travel: sealed (jsonb documents whose marked values are
-- tokens under each person's data key); everything in a plain column is free of personal data.

-- One row per case, made by the first fact about it, whichever that is.
CREATE TABLE cases (
    case_id                  text PRIMARY KEY,
    force                    text,
    status                   text,
    crime_reference          text,
    sensitive                bool NOT NULL DEFAULT false,
    contact_form             text,
    contact_form_changed_at  timestamptz,
    on_hold                  bool NOT NULL DEFAULT false,
    hold_changed_at          timestamptz,
    hold                     jsonb,         -- the rj.case.held fact, sealed (its concern, who raised it)
    opened_at                timestamptz,
    referral                 int,
    offence_category         text,
    specialist_required      bool,
    risk_assessment_required bool,
    sensitivity_reasons      text[] NOT NULL DEFAULT '{}',
    risk_level               text,
    safe_to_proceed          bool,
    risk_assessed_at         timestamptz,
    closure_reason           text,
    closed_at                timestamptz,
    updated_at               timestamptz NOT NULL
);
CREATE INDEX cases_by_force_status ON cases (force, status, updated_at DESC, case_id);
CREATE INDEX cases_by_force_recent ON cases (force, updated_at DESC, case_id);
CREATE INDEX cases_by_crime_reference ON cases (crime_reference);

-- Who is assigned to each case now.
CREATE TABLE case_facilitators (
    case_id        text NOT NULL,
    facilitator_id text NOT NULL,
    specialist     bool,
    assigned_at    timestamptz,
    PRIMARY KEY (case_id, facilitator_id)
);
CREATE INDEX case_facilitators_by_facilitator ON case_facilitators (facilitator_id, case_id);

CREATE TABLE participants (
    case_id          text NOT NULL,
    person_id        text NOT NULL,
    role             text,
    required         bool,
    supports         text,
    under_18         bool,
    in_custody       bool,
    enhanced_rights  bool,
    vulnerable       bool,
    preferred_channel text,
    language         text,
    details          jsonb,          -- their Participant record as upstream gave it, sealed
    rectified        jsonb,          -- corrections by field (rj.participant.rectified), sealed; win over details
    rectified_at     jsonb NOT NULL DEFAULT '{}',  -- field -> when it was corrected (the newest correction wins)
    erased           bool NOT NULL DEFAULT false,  -- their data keys on the case were destroyed
    added_at         timestamptz,
    PRIMARY KEY (case_id, person_id)
);

-- Every consent decision. Who declined or withdrew is sealed (in ``fact``), as on the fact: person_id is null then.
CREATE TABLE consents (
    event_id    text PRIMARY KEY,
    case_id     text NOT NULL,
    person_id   text,
    purpose     text NOT NULL,
    decision    text NOT NULL CHECK (decision IN ('given', 'declined', 'withdrawn')),
    decided_at  timestamptz NOT NULL,
    recorded_at timestamptz,
    through     text,
    method      text,
    fact        jsonb NOT NULL
);
CREATE INDEX consents_by_case ON consents (case_id, decided_at);

CREATE TABLE meetings (
    case_id             text NOT NULL,
    meeting_id          text NOT NULL,
    kind                text,
    status              text NOT NULL,
    starts_at           timestamptz,
    ends_at             timestamptz,
    lead_facilitator_id text,
    facilitator_ids     text[] NOT NULL DEFAULT '{}',
    venue_id            text,
    visit_slot          text,
    attendee_ids        text[] NOT NULL DEFAULT '{}',
    cancellation_reason text,
    planned_at          timestamptz,     -- when the plan shown was decided (a later plan replaces it, never an older)
    PRIMARY KEY (case_id, meeting_id)
);

CREATE TABLE agreement_items (
    case_id         text NOT NULL,
    item_id         text NOT NULL,
    meeting_id      text,
    kind            text,
    owner_id        text,
    due_date        date,
    amount_pence    int,
    paid_pence      int NOT NULL DEFAULT 0,
    state           text NOT NULL,
    completed_at    timestamptz,
    terms           jsonb,           -- the item's terms, sealed (its description)
    PRIMARY KEY (case_id, item_id)
);

-- Deadlines: the Victims' Code clocks (per victim) and agreement items (per item).
CREATE TABLE deadlines (
    case_id    text NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('victim_information', 'victim_support_referral', 'agreement_item')),
    subject_id text NOT NULL,        -- the victim's person id, or the agreement item's id
    due_by     timestamptz,
    due_date   date,
    state      text NOT NULL CHECK (state IN ('due', 'breached', 'met')),
    changed_at timestamptz NOT NULL,
    PRIMARY KEY (case_id, kind, subject_id)
);
CREATE INDEX deadlines_by_state ON deadlines (state, due_date, case_id);

CREATE TABLE indirect_items (
    case_id      text NOT NULL,
    item_id      text NOT NULL,
    sender_id    text,
    recipient_id text,
    kind         text,
    state        text NOT NULL,
    submitted_at timestamptz,
    changed_at   timestamptz NOT NULL,
    submission   jsonb,              -- the rj.indirect.item-submitted fact, sealed (its content)
    PRIMARY KEY (case_id, item_id)
);
CREATE INDEX indirect_items_by_state ON indirect_items (state, case_id);

CREATE TABLE contact_attempts (
    event_id     text PRIMARY KEY,
    case_id      text NOT NULL,
    person_id    text,
    attempted_at timestamptz NOT NULL,
    method       text,
    outcome      text,
    fact         jsonb NOT NULL
);
CREATE INDEX contact_attempts_by_case ON contact_attempts (case_id, attempted_at);

CREATE TABLE notes (
    event_id  text PRIMARY KEY,
    case_id   text NOT NULL,
    note_id   text NOT NULL,
    person_id text,
    added_at  timestamptz NOT NULL,
    added_by  text,
    fact      jsonb NOT NULL
);
CREATE INDEX notes_by_case ON notes (case_id, added_at);

-- Every fact about a case, in the order it was decided: a plain summary, and the fact itself, sealed.
CREATE TABLE timeline (
    event_id   text PRIMARY KEY,
    case_id    text NOT NULL,
    at         timestamptz NOT NULL,
    event_type text NOT NULL,
    actor      text,
    summary    text NOT NULL,
    fact       jsonb NOT NULL
);
CREATE INDEX timeline_by_case ON timeline (case_id, at, event_id);

-- What became of each command: one row per fact it caused, or its rejection, or "already handled".
CREATE TABLE command_answers (
    command_id text NOT NULL,
    event_id   text PRIMARY KEY,
    case_id    text,
    event_type text NOT NULL,
    status     text NOT NULL CHECK (status IN ('accepted', 'rejected', 'already_handled')),
    reason     text,
    at         timestamptz NOT NULL
);
CREATE INDEX command_answers_by_command ON command_answers (command_id);

-- Registrations (not about a case).
CREATE TABLE facilitators (
    facilitator_id text PRIMARY KEY,
    specialist     bool NOT NULL,
    registered_at  timestamptz NOT NULL
);
CREATE TABLE venues (
    venue_id      text PRIMARY KEY,
    kind          text NOT NULL,
    name          text NOT NULL,
    registered_at timestamptz NOT NULL
);
