-- Facilitator and venue ids are one namespace across forces, and the services that keep them (consent,
-- scheduling) know nothing of forces. The API keeps which force first registered each id through it: only that
-- force may register it again (update it), assign that facilitator or book that venue or facilitator. Claimed
-- in the transaction that sends the registration, so two forces racing for a new id leave exactly one owner.
CREATE TABLE registration_owners (
    resource_type text NOT NULL CHECK (resource_type IN ('facilitator', 'venue')),
    resource_id   text NOT NULL,
    force         text NOT NULL,
    claimed_by    text NOT NULL,
    claimed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (resource_type, resource_id)
);

-- The sha256 of the command a command id was first sent as (its canonical JSON, actor and case included), so
-- that the same Idempotency-Key with a different body is refused (409) rather than answered with the first
-- command's id while the second is dropped. NULL on commands sent before this column existed: not compared.
ALTER TABLE commands_sent ADD COLUMN body_sha256 text;
