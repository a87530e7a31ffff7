-- A crime may have several offenders, each with their own outcome: the first offender's stays in `outcome`,
-- every other one's here (the latest per offender; personal data sealed like the rest).
ALTER TABLE crime_files ADD COLUMN co_outcomes jsonb NOT NULL DEFAULT '[]';
