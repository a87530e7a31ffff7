-- A registration that changes a facilitator's specialist flag is applied to every case they are assigned
-- to: find those cases by the facilitator ids in each case's state without reading every row.
CREATE INDEX cases_facilitators ON cases USING gin ((state -> 'facilitators') jsonb_path_ops);
