-- Where this service's intake has got to, per partition (the next offset to read), written in the same
-- transaction as what it applied. Kafka's committed offsets are the fast path; these survive their
-- loss (an expired or reset consumer group), so a lost group resumes where the data is instead of
-- replaying its topics (ours are kept for ever) through an inbox that housekeeping prunes.
CREATE TABLE consumer_positions (
    topic       text NOT NULL,     -- logical name, without the deployment's prefix
    partition   integer NOT NULL,
    next_offset bigint NOT NULL,
    PRIMARY KEY (topic, partition)
);

-- Housekeeping deletes inbox ids past the retention window, oldest first.
CREATE INDEX inbox_received ON inbox (received_at);
