-- The relay holds a key's later rows behind a parked one: it looks parked rows up by key.
CREATE INDEX outbox_parked_by_key ON outbox (key, id) WHERE published_at IS NULL AND parked_at IS NOT NULL;
