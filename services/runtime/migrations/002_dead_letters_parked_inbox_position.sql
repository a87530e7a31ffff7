-- Dead letters kept whole: the original bytes as they came (bytea), with a hash, whatever they hold.
-- The Kafka dead letter carries a bounded copy and points here.
CREATE TABLE dead_letters (
    id               text PRIMARY KEY,            -- derived from service, topic, partition and offset
    source_topic     text NOT NULL,
    partition        integer NOT NULL,
    "offset"         bigint NOT NULL,
    key              bytea,
    original         bytea,                       -- NULL for a tombstone
    original_sha256  text NOT NULL,
    reason           text NOT NULL,
    event_id         text,
    event_type       text,
    dead_lettered_at timestamptz NOT NULL DEFAULT now()
);

-- Events that wait for an upgrade of this service: one newer than it knows, and every later event of
-- the same case (key), in the order they came. Applied, in that order, once the service knows them.
CREATE TABLE parked (
    seq          bigserial PRIMARY KEY,
    case_key     text NOT NULL,
    source_topic text NOT NULL,
    partition    integer NOT NULL,
    "offset"     bigint NOT NULL,
    key          bytea,
    value        bytea NOT NULL,
    reason       text NOT NULL,
    parked_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source_topic, partition, "offset")
);
CREATE INDEX parked_by_case ON parked (case_key, seq);

-- Where each event id was first taken in (topic:partition:offset): a redelivery of that record is not a
-- repeat to answer, the same command id sent again is.
ALTER TABLE inbox ADD COLUMN position text;
