-- A crime reference is unique only within one force's crime system: a file is one force's crime (the force is
-- the upstream events' CloudEvents source), and may be referred again as a new case once its case is closed.
-- Files and clocks from before keep force '' and their case ids (schemas.referral.case_id_for).
ALTER TABLE crime_files ADD COLUMN force text NOT NULL DEFAULT '';
ALTER TABLE crime_files ADD COLUMN referral integer NOT NULL DEFAULT 1;
ALTER TABLE crime_files DROP CONSTRAINT crime_files_pkey;
ALTER TABLE crime_files ADD PRIMARY KEY (force, crime_reference);

ALTER TABLE victim_clocks ADD COLUMN force text NOT NULL DEFAULT '';
ALTER TABLE victim_clocks DROP CONSTRAINT victim_clocks_pkey;
ALTER TABLE victim_clocks ADD PRIMARY KEY (force, crime_reference, person_id);
