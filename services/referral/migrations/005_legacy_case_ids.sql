-- Files from before forces were told apart (force '') keep the case ids they gave their cases: the first event
-- from a force about such a crime adopts the file (its force becomes the source), and `legacy_id` keeps the
-- file's case ids derived as before (schemas.referral.case_id_for with an empty force).
ALTER TABLE crime_files ADD COLUMN legacy_id boolean NOT NULL DEFAULT false;
UPDATE crime_files SET legacy_id = true WHERE force = '';
