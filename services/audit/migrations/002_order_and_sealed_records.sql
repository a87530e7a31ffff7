-- crime.events records: the record itself, sealed whole under its day's bucket key (or as it came, with
-- encryption off); the entry's body, which its leaf commits to, is the SHA-256 of the record's bytes
-- (canonical.DIGEST_KIND), so that the tree can be rebuilt from the topic without the key. NULL elsewhere.
ALTER TABLE entries ADD COLUMN sealed_record bytea;

-- The first entry whose append order (topic, partition, offset and leaf, in index order) was published on
-- rj.audit with this head, up to its tree_size (rj.audit-entries.appended): what `rj audit verify --from-kafka`
-- rebuilds the tree in when the database is lost. NULL: a head signed before the order was published.
ALTER TABLE signed_heads ADD COLUMN order_from bigint;
