-- Reoffending, fixed after review (issue 16).
-- 1. An offence before the ended case's own crime is no reoffence: remember when that crime happened.
ALTER TABLE ended_cases ADD COLUMN crime_at timestamptz;  -- occurred, else reported; NULL: unknown
UPDATE ended_cases AS e
   SET crime_at = coalesce((f.crime ->> 'occurred_at')::timestamptz, (f.crime ->> 'reported_at')::timestamptz)
  FROM crime_files AS f
 WHERE f.case_id = e.case_id AND jsonb_typeof(f.crime) = 'object';

-- 2. Which files name which offenders (by force and person id): when a case ends, outcomes already on file about
-- its offenders (read before the closure: the two travel on different topics) are weighed too.
CREATE TABLE file_offenders (
    force           text NOT NULL,
    person_id       text NOT NULL,
    crime_reference text NOT NULL,
    PRIMARY KEY (force, person_id, crime_reference)
);
INSERT INTO file_offenders (force, person_id, crime_reference)
SELECT DISTINCT f.force, o -> 'offender' ->> 'person_id', f.crime_reference
  FROM crime_files AS f,
       jsonb_array_elements(
           CASE WHEN jsonb_typeof(f.outcome) = 'object' THEN jsonb_build_array(f.outcome) ELSE '[]'::jsonb END
           || f.co_outcomes) AS o
 WHERE o -> 'offender' ->> 'person_id' IS NOT NULL
ON CONFLICT DO NOTHING;

-- 3. Backfill the ended-case index from the files whose case ended before it existed: closed (the offenders who
-- accepted responsibility took part) or screened out (every offender named; screening declines only when no
-- offender accepts responsibility). How a closed case closed was never kept on the file: closure_reason stays
-- NULL (not known to be completed); when it ended is the file's last change.
INSERT INTO ended_cases (case_id, force, crime_reference, ended_as, closure_reason, decline_reason, ended_at,
                         offender_ids, crime_at)
SELECT f.case_id, f.force, f.crime_reference,
       CASE f.status WHEN 'closed' THEN 'closed' ELSE 'screened_out' END,
       NULL,
       CASE f.status WHEN 'declined' THEN 'offender_denies_responsibility' END,
       f.updated_at,
       offenders.ids,
       CASE WHEN jsonb_typeof(f.crime) = 'object'
            THEN coalesce((f.crime ->> 'occurred_at')::timestamptz, (f.crime ->> 'reported_at')::timestamptz) END
  FROM crime_files AS f
       CROSS JOIN LATERAL (
           SELECT coalesce(array_agg(DISTINCT o -> 'offender' ->> 'person_id') FILTER (
                      WHERE f.status = 'declined' OR (o ->> 'admitted_responsibility')::boolean IS TRUE), '{}') AS ids
             FROM jsonb_array_elements(
                      CASE WHEN jsonb_typeof(f.outcome) = 'object' THEN jsonb_build_array(f.outcome) ELSE '[]'::jsonb END
                      || f.co_outcomes) AS o
       ) AS offenders
 WHERE f.status IN ('closed', 'declined')
ON CONFLICT DO NOTHING;
INSERT INTO ended_case_offenders (force, person_id, case_id)
SELECT e.force, p.person_id, e.case_id FROM ended_cases AS e, unnest(e.offender_ids) AS p(person_id)
ON CONFLICT DO NOTHING;
