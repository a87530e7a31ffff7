-- One row per case: participants, readiness as consent last said, meetings, agreement, closure.
CREATE TABLE cases (
    key        text PRIMARY KEY,      -- the case id
    state      jsonb,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE facilitators (
    facilitator_id text PRIMARY KEY,
    profile        jsonb NOT NULL
);

CREATE TABLE venues (
    venue_id text PRIMARY KEY,
    profile  jsonb NOT NULL
);

-- Who and what is held when. The domain refuses a clash with a reason; the exclusion constraint is
-- the last line of defence, so a bug can never store a double booking.
CREATE EXTENSION IF NOT EXISTS btree_gist;
CREATE TABLE bookings (
    resource   text NOT NULL,         -- facilitator:<id> | venue:<id> | person:<id>
    case_id    text NOT NULL,
    meeting_id text NOT NULL,
    starts_at  timestamptz NOT NULL,
    ends_at    timestamptz NOT NULL,
    PRIMARY KEY (resource, case_id, meeting_id),
    EXCLUDE USING gist (resource WITH =, tstzrange(starts_at, ends_at) WITH &&)
);
