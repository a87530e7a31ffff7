-- Reoffending and the sensitive-case gate, fixed after the second review (issue 16).

-- 1. Every risk assessment of a case, not only the latest: RJ information is judged by the assessment that stood
-- when it was given (the latest made at or before then), which a later one must not overwrite. Of two made at
-- the same moment, the unsafe one stands (store.save_assessments).
ALTER TABLE risk_assessments DROP CONSTRAINT risk_assessments_pkey;
ALTER TABLE risk_assessments ADD PRIMARY KEY (case_id, assessed_at);

-- 2. Ended cases whose outcomes already on file have not been weighed against them: every case migration 007
-- backfilled (its outcomes on file were read before 007 and never looked at again). The service weighs them, a
-- batch at a time (app.weigh_outcomes_on_file, in the sweep), and marks them; a case the service ends itself
-- weighs them in the transaction that ends it, so new rows default to done. Rows the service ended between 007
-- and now are weighed again: harmless, as a reoffence is recorded once per (case, later crime).
-- 007's backfill is one set-based INSERT ... SELECT over the closed and declined files (no per-row round trips,
-- no decryption): a migration runs in one transaction, so batching it would only split the same work.
ALTER TABLE ended_cases ADD COLUMN on_file_weighed boolean NOT NULL DEFAULT false;
ALTER TABLE ended_cases ALTER COLUMN on_file_weighed SET DEFAULT true;
CREATE INDEX ended_cases_on_file_unweighed ON ended_cases (case_id) WHERE NOT on_file_weighed;
