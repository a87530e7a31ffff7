-- An erasure asked for while a case is under a retention hold is kept here, and carried out (with its fact)
-- when the case's last hold is lifted. Who asked, and which command, not why: the grounds are in the command.
CREATE TABLE deferred_erasures (
    case_id         text NOT NULL,
    person_id       text NOT NULL,
    command_id      text NOT NULL,
    asked_by_kind   text NOT NULL,
    asked_by_id     text NOT NULL,
    asked_at        timestamptz NOT NULL,
    PRIMARY KEY (case_id, person_id)
);
