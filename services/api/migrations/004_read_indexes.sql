-- A facilitator's list of cases (GET /cases as a facilitator or volunteer, or ?facilitator=) in one index walk,
-- the most recently changed first, however few or many cases they have among their force's. Without it the list
-- walked the whole force's cases by date and probed each for the assignment: a new facilitator with two cases in a
-- force of 50,000 cost a walk of all 50,000 (over 100 ms), and PostgreSQL's generic plans chose that walk for all.
--
-- Each assignment carries its case's updated_at (case_updated_at), kept equal to it by the two triggers below, in
-- the transaction that changes either: the projection (services/api/readmodel.py) needs to know nothing of it.

ALTER TABLE case_facilitators ADD COLUMN case_updated_at timestamptz;
UPDATE case_facilitators f SET case_updated_at = c.updated_at FROM cases c WHERE c.case_id = f.case_id;
CREATE INDEX case_facilitators_by_recent ON case_facilitators (facilitator_id, case_updated_at DESC, case_id);

CREATE FUNCTION case_facilitators_take_case_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SELECT c.updated_at INTO NEW.case_updated_at FROM {schema}.cases c WHERE c.case_id = NEW.case_id;
    RETURN NEW;
END
$$;
CREATE TRIGGER case_facilitators_take_case_updated_at BEFORE INSERT ON case_facilitators
    FOR EACH ROW EXECUTE FUNCTION case_facilitators_take_case_updated_at();

CREATE FUNCTION cases_give_updated_at_to_facilitators() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE {schema}.case_facilitators SET case_updated_at = NEW.updated_at WHERE case_id = NEW.case_id;
    RETURN NULL;
END
$$;
CREATE TRIGGER cases_give_updated_at_to_facilitators AFTER UPDATE OF updated_at ON cases
    FOR EACH ROW WHEN (NEW.updated_at IS DISTINCT FROM OLD.updated_at)
    EXECUTE FUNCTION cases_give_updated_at_to_facilitators();
