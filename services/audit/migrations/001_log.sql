-- The audit log: every record of every topic once, in the order appended, with what the Merkle tree over
-- them needs to answer proofs without rebuilding it. Insert-only: the appender role below may only INSERT
-- and SELECT these tables, and the service appends as that role.
CREATE TABLE entries (
    idx         bigint PRIMARY KEY,          -- 0-based leaf index, gap-free
    topic       text NOT NULL,               -- logical name, without the deployment's prefix
    partition   integer NOT NULL,
    "offset"    bigint NOT NULL,
    key         text,                        -- the Kafka key (the case id on rj.* topics)
    appended_at timestamptz NOT NULL,
    body        bytea NOT NULL,              -- canonical bytes (crime.events: its raw record sealed whole)
    leaf        bytea NOT NULL,              -- merkle.entry_leaf_hash(topic, partition, offset, body)
    UNIQUE (topic, partition, "offset")
);
CREATE INDEX entries_by_key ON entries (key, idx);

-- Every perfect subtree the appends completed: leaves [position * 2^level, (position + 1) * 2^level).
CREATE TABLE subtrees (
    level    smallint NOT NULL,
    position bigint NOT NULL,
    hash     bytea NOT NULL,
    PRIMARY KEY (level, position)
);

-- The tree after each appending batch: its size, root and compact frontier (merkle.CompactTree.to_bytes).
CREATE TABLE tree_states (
    size        bigint PRIMARY KEY,
    root        bytea NOT NULL,
    compact     bytea NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

-- Signed tree heads (heads.tree_head_bytes signed with the log's Ed25519 key).
CREATE TABLE signed_heads (
    tree_size    bigint NOT NULL,
    timestamp_ms bigint NOT NULL,
    root         bytea NOT NULL,
    log_id       bytea NOT NULL,
    signature    bytea NOT NULL,
    PRIMARY KEY (tree_size, timestamp_ms)
);

-- The appender: a role that can add to the log and read it, never change or remove what is there. Roles are
-- the cluster's, so another database of the cluster may have made it already.
DO $$
BEGIN
    CREATE ROLE rj_audit_appender NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;
GRANT rj_audit_appender TO CURRENT_USER;
GRANT USAGE ON SCHEMA {schema} TO rj_audit_appender;
GRANT SELECT, INSERT ON entries, subtrees, tree_states, signed_heads TO rj_audit_appender;
