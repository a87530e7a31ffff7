-- What the service's figures (services/api/figures.py) need that the pages did not keep: when a case was declined at
-- screening (its end, for the reoffending comparison), when a meeting was held (a held conference stays held, whatever
-- status a later fact gives the meeting), whether RJ information was given on time, every survey answer, and every
-- later offence recorded against an offender of an ended case. Folded by services/api/readmodel.py (_FIGURES).
--
-- Written to run again harmlessly (IF NOT EXISTS, ON CONFLICT, only filling what is empty): the backfill below reads
-- the timeline, which keeps every fact the read model has folded, and tests/integration/test_figures.py runs this
-- file a second time over a read model whose figure columns were emptied, to prove the backfill gives the same figures.
-- Every value read from a fact here is one the contract keeps in clear (the survey's comments, the later crime and
-- its date are sealed, and are not read).

ALTER TABLE cases ADD COLUMN IF NOT EXISTS declined_at timestamptz;
ALTER TABLE meetings ADD COLUMN IF NOT EXISTS held_at timestamptz;
ALTER TABLE deadlines ADD COLUMN IF NOT EXISTS on_time bool;

-- One answer per person per case (the consent service refuses a second).
CREATE TABLE IF NOT EXISTS survey_responses (
    case_id      text NOT NULL,
    person_id    text NOT NULL,
    role         text NOT NULL,
    satisfied    bool NOT NULL,
    score        int NOT NULL,
    responded_at timestamptz NOT NULL,
    PRIMARY KEY (case_id, person_id)
);
CREATE INDEX IF NOT EXISTS survey_responses_by_time ON survey_responses (responded_at);

-- One row per rj.case.reoffence-recorded (once per case and later crime).
CREATE TABLE IF NOT EXISTS reoffences (
    event_id     text PRIMARY KEY,
    case_id      text NOT NULL,
    person_id    text NOT NULL,
    rj_completed bool,
    recorded_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS reoffences_by_case ON reoffences (case_id);

-- A force's referrals in a range, without walking its other cases.
CREATE INDEX IF NOT EXISTS cases_by_force_opened ON cases (force, opened_at) WHERE opened_at IS NOT NULL;

-- Backfill from the timeline: facts folded before this file existed.
UPDATE cases c SET declined_at = t.decided_at
  FROM (SELECT case_id, min((fact->>'decided_at')::timestamptz) AS decided_at
          FROM timeline WHERE event_type = 'rj.case.declined' GROUP BY case_id) t
 WHERE t.case_id = c.case_id AND c.declined_at IS NULL;

UPDATE meetings m SET held_at = t.held_at, kind = COALESCE(m.kind, t.kind)
  FROM (SELECT case_id, fact->>'meeting_id' AS meeting_id, min((fact->>'held_at')::timestamptz) AS held_at,
               min(fact->>'kind') AS kind
          FROM timeline WHERE event_type = 'rj.meeting.held' GROUP BY 1, 2) t
 WHERE t.case_id = m.case_id AND t.meeting_id = m.meeting_id AND m.held_at IS NULL;

UPDATE deadlines d SET on_time = t.on_time
  FROM (SELECT case_id, CASE event_type WHEN 'rj.victim-information.provided' THEN 'victim_information'
                                        ELSE 'victim_support_referral' END AS kind,
               fact->>'person_id' AS person_id, bool_or((fact->>'on_time')::bool) AS on_time
          FROM timeline
         WHERE event_type IN ('rj.victim-information.provided', 'rj.victim-support.referral-recorded')
         GROUP BY 1, 2, 3) t
 WHERE t.case_id = d.case_id AND t.kind = d.kind AND t.person_id = d.subject_id AND d.on_time IS NULL;

INSERT INTO survey_responses (case_id, person_id, role, satisfied, score, responded_at)
SELECT case_id, fact->>'person_id', fact->>'role', (fact->>'satisfied')::bool, (fact->>'score')::int,
       (fact->>'responded_at')::timestamptz
  FROM timeline WHERE event_type = 'rj.survey.response-recorded'
ON CONFLICT (case_id, person_id) DO NOTHING;

INSERT INTO reoffences (event_id, case_id, person_id, rj_completed, recorded_at)
SELECT event_id, case_id, fact->>'person_id', (fact->>'rj_completed')::bool, (fact->>'recorded_at')::timestamptz
  FROM timeline WHERE event_type = 'rj.case.reoffence-recorded'
ON CONFLICT (event_id) DO NOTHING;
