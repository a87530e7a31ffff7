-- A facilitator's list of cases (GET /cases as a facilitator or volunteer, or ?facilitator=) in one index walk,
-- the most recently changed first, however few or many cases they have among their force's. Without it the list
-- walked the whole force's cases by date and probed each for the assignment: a new facilitator with two cases in a
-- force of 50,000 cost a walk of all 50,000 (over 100 ms), and PostgreSQL's generic plans chose that walk for all.
--
-- The same for one facilitator's cases in one status (?status=): without the status in the index, a status none or
-- few of their cases are in walked all their cases.
--
-- Each assignment carries its case's updated_at and status (case_updated_at, case_status), kept equal to them by
-- the two triggers below, in the transaction that changes either: the projection (services/api/readmodel.py) needs
-- to know nothing of it.

ALTER TABLE case_facilitators ADD COLUMN case_updated_at timestamptz, ADD COLUMN case_status text;
UPDATE case_facilitators f SET case_updated_at = c.updated_at, case_status = c.status
  FROM cases c WHERE c.case_id = f.case_id;
CREATE INDEX case_facilitators_by_recent ON case_facilitators (facilitator_id, case_updated_at DESC, case_id);
CREATE INDEX case_facilitators_by_status ON case_facilitators
    (facilitator_id, case_status, case_updated_at DESC, case_id);

CREATE FUNCTION case_facilitators_take_case_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SELECT c.updated_at, c.status INTO NEW.case_updated_at, NEW.case_status
      FROM {schema}.cases c WHERE c.case_id = NEW.case_id;
    RETURN NEW;
END
$$;
CREATE TRIGGER case_facilitators_take_case_updated_at BEFORE INSERT ON case_facilitators
    FOR EACH ROW EXECUTE FUNCTION case_facilitators_take_case_updated_at();

CREATE FUNCTION cases_give_updated_at_to_facilitators() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE {schema}.case_facilitators SET case_updated_at = NEW.updated_at, case_status = NEW.status
     WHERE case_id = NEW.case_id;
    RETURN NULL;
END
$$;
CREATE TRIGGER cases_give_updated_at_to_facilitators AFTER UPDATE OF updated_at, status ON cases
    FOR EACH ROW WHEN (NEW.updated_at IS DISTINCT FROM OLD.updated_at OR NEW.status IS DISTINCT FROM OLD.status)
    EXECUTE FUNCTION cases_give_updated_at_to_facilitators();
