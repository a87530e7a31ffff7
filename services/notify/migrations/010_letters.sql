-- The letter queue (services/notify/channels/letters.py): each letter rendered once, waiting for a caseworker to
-- print it. A letter holds the person's name and address: ``pdf`` and ``html`` are sealed tokens under the
-- recipient's data key on the case (fieldcrypt), so erasing that person shreds their letters; nothing else here
-- is personal (ids, dates, a page count). ``notification_id`` is the dedupe key: a repeated send finds its letter.
CREATE TABLE letters (
    letter_id       uuid PRIMARY KEY,
    notification_id text NOT NULL UNIQUE,
    case_id         text NOT NULL,
    person_id       text NOT NULL,
    large_print     boolean NOT NULL,
    pages           integer NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    printed_at      timestamptz,
    printed_by      text,
    pdf             text NOT NULL,
    html            text NOT NULL
);
CREATE INDEX letters_unprinted ON letters (created_at) WHERE printed_at IS NULL;
