-- The indirect RJ release sweep (``store.cases_with_timed_items_due``) looks for cases with an approved item
-- still waiting: an index on exactly that containment, so the sweep reads the few such cases, not every case.
CREATE INDEX cases_indirect_items_waiting ON cases USING gin ((state->'indirect'->'items') jsonb_path_ops);
