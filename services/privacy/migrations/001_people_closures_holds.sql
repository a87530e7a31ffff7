-- Who is on which case, in which role: the privacy service's index, from rj.case.opened. ``erased_at``:
-- when their data on the case was erased (by an erasure command or by retention).
CREATE TABLE case_people (
    case_id   text NOT NULL,
    person_id text NOT NULL,
    role      text NOT NULL,
    erased_at timestamptz,
    PRIMARY KEY (case_id, person_id)
);
CREATE INDEX case_people_by_person ON case_people (person_id);

-- How and when each case ended (rj.case.closed, or rj.case.declined at screening), and when retention
-- erased everything left on it. A row may exist before the closure is known (a hold placed early).
CREATE TABLE cases (
    case_id             text PRIMARY KEY,
    outcome             text,
    closed_at           timestamptz,
    retention_erased_at timestamptz,
    CHECK ((outcome IS NULL) = (closed_at IS NULL))
);
CREATE INDEX cases_awaiting_retention ON cases (closed_at) WHERE closed_at IS NOT NULL AND retention_erased_at IS NULL;

-- Retention holds standing on a case (legal, complaint, safeguarding review): while any stands, nothing
-- on the case is erased by retention. Lifting deletes the row; the facts keep the history.
CREATE TABLE retention_holds (
    case_id   text NOT NULL,
    kind      text NOT NULL,
    placed_at timestamptz NOT NULL,
    placed_by text NOT NULL,
    PRIMARY KEY (case_id, kind)
);
