-- One row per case: the consent service's whole view of it (participants, consents, assessments),
-- decided by services/consent/domain.py.
CREATE TABLE cases (
    key        text PRIMARY KEY,      -- the case id
    state      jsonb,
    updated_at timestamptz NOT NULL DEFAULT now()
);
