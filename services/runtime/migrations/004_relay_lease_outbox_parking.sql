-- Relay leadership as a lease with an expiry (PostgreSQL's clock): a leader renews it every third of its
-- length; a hung or frozen leader loses it when it expires, and another replica takes over. Every new
-- holder gets the next epoch, which the records it publishes carry (header rj-relay-epoch).
CREATE TABLE relay_lease (
    id         integer PRIMARY KEY CHECK (id = 1),
    holder     text NOT NULL,
    epoch      bigint NOT NULL,
    expires_at timestamptz NOT NULL
);

-- An outbox row that can never be published (e.g. larger than the broker takes) is parked with its
-- reason, for an operator, and the rows behind it flow.
ALTER TABLE outbox ADD COLUMN parked_at timestamptz, ADD COLUMN parked_reason text;
DROP INDEX outbox_unpublished;
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL AND parked_at IS NULL;
CREATE INDEX outbox_parked ON outbox (id) WHERE published_at IS NULL AND parked_at IS NOT NULL;
