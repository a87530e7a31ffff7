-- Every command the API put on rj.commands, by its id: who sent it and about which case, so that its outcome
-- is shown only to those who may see the case, and so that a POST retried with the same Idempotency-Key
-- (the id is derived from the sender and the key) answers with the first one's id and sends nothing twice.
CREATE TABLE commands_sent (
    command_id   text PRIMARY KEY,
    case_id      text NOT NULL,
    command_type text NOT NULL,
    staff_id     text NOT NULL,
    sent_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX commands_sent_by_case ON commands_sent (case_id, sent_at);
