"""The key store: the data keys personal data is encrypted under, wrapped by a master key that is never in
the database, and destroyed to erase (crypto-shredding).

Two kinds of data key live in the ``keystore`` schema (its own migrations, applied by ``ensure_schema``):

- one per (person, case): every personal field about that person on that case is encrypted under it, so
  erasing a person on one case, or a case's retention, never touches the same person's other cases;
  two pseudo-persons own a key per case too: ``(case)``, the case's own data, and ``(monitoring)``, the
  equality-monitoring data of everyone on it (age band, gender, ethnicity), which must outlive the erasure
  of a person who declines; only the case's retention (``destroy_case``) destroys those two;
- one per time bucket (a day or a month), for bytes we cannot split into fields (an upstream record kept
  whole); retention destroys a bucket's key when the bucket ages out.

A data key is 32 random bytes used with AES-256-GCM. It is stored wrapped (AES-256-GCM under a master key,
the additional data binding the key id with its person and case, or with its bucket, so a wrapped key
copied onto another row does not unwrap). Master keys come from settings (``MASTER_KEYS`` or
``MASTER_KEY_FILE``): ``version:base64key`` entries, the first current. New keys are wrapped under the
current one; ``rotate`` re-wraps every live key under it while readers keep accepting every listed
version, so a rotation needs no downtime. A key whose master version has been removed from settings fails
with ``UnknownMasterKey``: a configuration fault, never a data fault.

Destroying a key overwrites the wrapped bytes with NULL and stamps who, when and why; the row stays, so a
later write for the same person and case finds the key destroyed and keeps nothing (erasure is final).

Every function takes an asyncpg connection. Run them at READ COMMITTED (PostgreSQL's default), which the
race-safe creation relies on: a key inserted by a concurrent transaction is read by the next statement.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import asyncpg
import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.runtime.db import apply_migrations
from services.runtime.settings import Settings

log = structlog.get_logger()

SCHEMA = "keystore"
NONCE_BYTES = 12
KEY_BYTES = 32

CASE_PERSON = "(case)"
"""The owner of personal data on a case that cannot be attributed to one person (see fieldcrypt)."""

MONITORING_PERSON = "(monitoring)"
"""The owner of the monitoring data (``schemas.pii.MonitoringPii``) of everyone on a case: a key per case that
erasing a person (``destroy``) leaves alone, so that what monitoring needs outlives a decline's erasure."""

PersonCase = tuple[str, str]


class KeyStoreError(RuntimeError):
    """The key store cannot do its work. Not a fault of the data being processed: never dead-letter on it."""


class UnknownMasterKey(KeyStoreError):
    """A data key is wrapped under a master key version that settings no longer list."""


class MasterKeyConfigError(KeyStoreError):
    """``MASTER_KEYS`` / ``MASTER_KEY_FILE`` is missing or malformed."""


# --- master keys --------------------------------------------------------------------------------


@dataclass(frozen=True)
class MasterKeys:
    """The master keys from settings, by version; ``current`` wraps new keys and is the rotation target."""

    keys: Mapping[str, bytes]
    current: str
    _aeads: dict[str, AESGCM] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_aeads", {version: AESGCM(key) for version, key in self.keys.items()})

    @classmethod
    def parse(cls, text: str) -> MasterKeys:
        keys: dict[str, bytes] = {}
        order: list[str] = []
        for entry in (e.strip() for e in text.replace("\n", ",").split(",")):
            if not entry or entry.startswith("#"):
                continue
            version, sep, encoded = entry.partition(":")
            version = version.strip()
            if not sep or not version:
                raise MasterKeyConfigError("a master key entry must be 'version:base64key'")
            try:
                key = base64.b64decode(encoded.strip(), validate=True)
            except binascii.Error:
                raise MasterKeyConfigError(f"master key version {version!r} is not valid base64") from None
            if len(key) != KEY_BYTES:
                raise MasterKeyConfigError(f"master key version {version!r} must be {KEY_BYTES} bytes, not {len(key)}")
            if version in keys:
                raise MasterKeyConfigError(f"master key version {version!r} listed twice")
            keys[version] = key
            order.append(version)
        if not order:
            raise MasterKeyConfigError("no master key configured: set MASTER_KEYS or MASTER_KEY_FILE")
        return cls(keys=keys, current=order[0])

    @classmethod
    def from_settings(cls, settings: Settings) -> MasterKeys:
        text = settings.master_keys.get_secret_value()
        if settings.master_key_file is not None:
            text = ",".join(t for t in (text, Path(settings.master_key_file).read_text()) if t.strip())
        return cls.parse(text)

    @staticmethod
    def generate(version: str) -> str:
        """A new ``version:base64key`` entry (for the embedded stack, tests, and an operator's rotation)."""
        return f"{version}:{base64.b64encode(os.urandom(KEY_BYTES)).decode()}"

    def wrap(self, key: bytes, aad: bytes, version: str | None = None, nonce: bytes | None = None) -> tuple[str, bytes]:
        """``key`` wrapped under the master key ``version`` (the current one): the nonce it was sealed with, then
        the sealed key. ``nonce``: a fresh one drawn by the caller (keys made in bulk draw theirs in one read)."""
        version = version or self.current
        if nonce is None:
            nonce = os.urandom(NONCE_BYTES)
        elif len(nonce) != NONCE_BYTES:  # unwrap takes the first NONCE_BYTES: any other length would lose the key
            raise ValueError(f"a wrapping nonce is {NONCE_BYTES} bytes, not {len(nonce)}")
        return version, nonce + self._aead(version, what="wrap a key").encrypt(nonce, key, aad)

    def unwrap(self, version: str, wrapped: bytes, aad: bytes, *, what: str) -> bytes:
        try:
            return self._aead(version, what=what).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], aad)
        except InvalidTag:
            raise KeyStoreError(
                f"{what} does not unwrap under master key version {version!r}: the master key of that version "
                "is not the one it was wrapped under, or the row was altered"
            ) from None

    def _aead(self, version: str, *, what: str) -> AESGCM:
        try:
            return self._aeads[version]
        except KeyError:
            raise UnknownMasterKey(
                f"{what}: wrapped under master key version {version!r}, which MASTER_KEYS does not list "
                f"(listed: {', '.join(self.keys)}); keep an old version listed until `rotate` has re-wrapped "
                "every key under the current one"
            ) from None


# --- keys as handed out -------------------------------------------------------------------------


@dataclass(frozen=True)
class DataKey:
    """An unwrapped data key; ``aead`` is None when the key was destroyed (the data it guarded is erased)."""

    key_id: str
    person_id: str
    case_id: str
    aead: AESGCM | None = field(repr=False)

    @property
    def destroyed(self) -> bool:
        return self.aead is None


@dataclass(frozen=True)
class BucketKey:
    key_id: str
    bucket: str
    aead: AESGCM | None = field(repr=False)

    @property
    def destroyed(self) -> bool:
        return self.aead is None


Granularity = Literal["day", "month"]


def bucket_of(when: datetime, granularity: Granularity = "day") -> tuple[str, datetime, datetime]:
    """The time bucket ``when`` falls in: its name and its [start, end) in UTC."""
    when = when.astimezone(UTC)
    if granularity == "day":
        start = datetime(when.year, when.month, when.day, tzinfo=UTC)
        return f"day:{start.date().isoformat()}", start, start + timedelta(days=1)
    start = datetime(when.year, when.month, 1, tzinfo=UTC)
    end = datetime(when.year + (when.month == 12), when.month % 12 + 1, 1, tzinfo=UTC)
    return f"month:{start:%Y-%m}", start, end


def _data_key_aad(key_id: str, person_id: str, case_id: str) -> bytes:
    """``json.dumps(["rj-data-key", key_id, person_id, case_id])``, as every key was wrapped under, built from
    its parts (a key is made per person on every new case: this is on intake's path)."""
    return f'["rj-data-key", {_json_text(key_id)}, {_json_text(person_id)}, {_json_text(case_id)}]'.encode()


_json_text = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]
"""A string as ``json.dumps`` writes it (quoted, escaped, ASCII)."""


def _random_key_ids_packed(n: int) -> tuple[list[str], bytes]:
    """``n`` random (version 4) UUIDs: as text, and as their 16 bytes each, end to end (how ``_MAKE`` takes them)."""
    raw = bytearray(os.urandom(16 * n))
    raw[6::16] = bytes((b & 0x0F) | 0x40 for b in raw[6::16])  # version 4
    raw[8::16] = bytes((b & 0x3F) | 0x80 for b in raw[8::16])  # the RFC 4122 variant
    text = raw.hex()
    ids = [
        f"{text[at : at + 8]}-{text[at + 8 : at + 12]}-{text[at + 12 : at + 16]}-{text[at + 16 : at + 20]}-"
        f"{text[at + 20 : at + 32]}"
        for at in range(0, 32 * n, 32)
    ]
    return ids, bytes(raw)


def _bucket_key_aad(key_id: str, bucket: str) -> bytes:
    return json.dumps(["rj-bucket-key", key_id, bucket]).encode()


# --- schema -------------------------------------------------------------------------------------

_MIGRATIONS: tuple[tuple[str, str], ...] = (
    (
        "001_keys",
        """
        CREATE TABLE {schema}.data_keys (
            key_id uuid PRIMARY KEY,
            person_id text NOT NULL,
            case_id text NOT NULL,
            wrapped_key bytea,
            master_key_version text,
            created_at timestamptz NOT NULL DEFAULT now(),
            destroyed_at timestamptz,
            destroyed_by text,
            destroy_reason text,
            UNIQUE (person_id, case_id),
            CHECK ((wrapped_key IS NULL) = (destroyed_at IS NOT NULL)),
            CHECK (wrapped_key IS NULL OR master_key_version IS NOT NULL)
        );
        CREATE INDEX data_keys_case ON {schema}.data_keys (case_id);
        CREATE INDEX data_keys_to_rewrap ON {schema}.data_keys (master_key_version) WHERE wrapped_key IS NOT NULL;

        CREATE TABLE {schema}.bucket_keys (
            key_id uuid PRIMARY KEY,
            bucket text NOT NULL UNIQUE,
            starts_at timestamptz NOT NULL,
            ends_at timestamptz NOT NULL,
            wrapped_key bytea,
            master_key_version text,
            created_at timestamptz NOT NULL DEFAULT now(),
            destroyed_at timestamptz,
            destroyed_by text,
            destroy_reason text,
            CHECK ((wrapped_key IS NULL) = (destroyed_at IS NOT NULL))
        );
        CREATE INDEX bucket_keys_live_end ON {schema}.bucket_keys (ends_at) WHERE wrapped_key IS NOT NULL;
        """,
    ),
    (
        # The key store's own role owns its schema and tables; nobody else gets anything by default. A
        # deployment grants it to the login role(s) its services use (``GRANT rj_keystore TO rj``) and can
        # then take the tables away from anyone else who reaches the database. Roles belong to the whole
        # cluster: another database (or a concurrent migration) may have made it first.
        "002_own_role",
        """
        DO $$
        BEGIN
            CREATE ROLE rj_keystore NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END
        $$;
        GRANT rj_keystore TO current_user;
        ALTER SCHEMA {schema} OWNER TO rj_keystore;
        ALTER TABLE {schema}.data_keys OWNER TO rj_keystore;
        ALTER TABLE {schema}.bucket_keys OWNER TO rj_keystore;
        REVOKE ALL ON SCHEMA {schema} FROM PUBLIC;
        REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM PUBLIC;
        """,
    ),
    (
        # Every new case makes a key per participant inside intake's transaction: keep only the indexes that
        # answer a question. (case_id, person_id) finds a pair and a whole case (erasure, retention);
        # rotation walks the primary key.
        "003_fewer_indexes",
        """
        ALTER TABLE {schema}.data_keys ADD CONSTRAINT data_keys_case_person UNIQUE (case_id, person_id);
        ALTER TABLE {schema}.data_keys DROP CONSTRAINT data_keys_person_id_case_id_key;
        DROP INDEX {schema}.data_keys_case;
        DROP INDEX {schema}.data_keys_to_rewrap;
        """,
    ),
    (
        # The keys of (person, case) pairs and of key ids, planned for data_keys as it is at each call (a
        # dynamic query in PL/pgSQL is planned with its values every time): see ``_MAKE``, which took its place.
        "004_lookup_planned_per_call",
        """
        CREATE FUNCTION {schema}.data_keys_for(persons text[], cases text[], ids uuid[])
        RETURNS TABLE (key_id text, person_id text, case_id text, wrapped_key bytea, master_key_version text)
        LANGUAGE plpgsql STABLE AS $fn$
        BEGIN
            RETURN QUERY EXECUTE
                'SELECT k.key_id::text, k.person_id, k.case_id, k.wrapped_key, k.master_key_version
                   FROM {schema}.data_keys k WHERE (k.person_id, k.case_id) IN (SELECT * FROM unnest($1, $2))
                 UNION
                 SELECT k.key_id::text, k.person_id, k.case_id, k.wrapped_key, k.master_key_version
                   FROM {schema}.data_keys k WHERE k.key_id = ANY($3)'
                USING persons, cases, ids;
        END
        $fn$;
        ALTER FUNCTION {schema}.data_keys_for(text[], text[], uuid[]) OWNER TO rj_keystore;
        REVOKE ALL ON FUNCTION {schema}.data_keys_for(text[], text[], uuid[]) FROM PUBLIC;
        """,
    ),
    (
        # Keys for pairs a process has not met, made first and looked up only where one exists: see ``_MAKE``.
        # (``data_keys_for`` stays for a process of the previous release during a rolling deploy.)
        "005_make_then_look_up",
        """
        CREATE FUNCTION {schema}.data_keys_make(ids uuid[], persons text[], cases text[], wrapped bytea[],
                                                versions text[], known uuid[])
        RETURNS TABLE (key_id text, person_id text, case_id text, wrapped_key bytea, master_key_version text,
                       made_here boolean)
        LANGUAGE plpgsql VOLATILE
        -- Each of its queries meets at most a batch's pairs: an index probe a pair. Planned with a mid-sized table,
        -- PostgreSQL chose to hash the whole table instead (measured: 17 us a key made against 10 so).
        SET enable_hashjoin = off SET enable_mergejoin = off
        AS $fn$
        DECLARE
            made_count bigint := 0;
        BEGIN
            -- The caller's new keys, for pairs that have none (made_here; without their wrapped bytes: the caller
            -- holds the keys). A pair whose key is committed is left out before inserting: ON CONFLICT would wait
            -- for any transaction holding that row (an erasure, the retention sweep, a rotation) and could
            -- deadlock with one holding several. Only a key another transaction is still making makes the INSERT
            -- wait, to take that key (or make this one, if that transaction rolls back). A read-only transaction
            -- (a standby) makes nothing: it looks keys up. Each query here is planned with its values at each
            -- call, as data_keys_for's is, so that no plan made for a nearly empty table is kept as it grows.
            IF current_setting('transaction_read_only') = 'off' THEN
                RETURN QUERY EXECUTE
                    'WITH inserted AS (
                         INSERT INTO {schema}.data_keys (key_id, person_id, case_id, wrapped_key, master_key_version)
                         SELECT u.* FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bytea[], $5::text[])
                                         AS u(key_id, person_id, case_id, wrapped_key, master_key_version)
                          WHERE NOT EXISTS (SELECT 1 FROM {schema}.data_keys k
                                             WHERE k.case_id = u.case_id AND k.person_id = u.person_id)
                         ON CONFLICT (case_id, person_id) DO NOTHING
                         RETURNING key_id, person_id, case_id
                     )
                     SELECT key_id::text, person_id, case_id, NULL::bytea, NULL::text, true FROM inserted'
                    USING ids, persons, cases, wrapped, versions;
                GET DIAGNOSTICS made_count = ROW_COUNT;
            END IF;
            -- Pairs that had a key (another process made it, or an erasure left it destroyed). A new statement at
            -- READ COMMITTED: it sees a key whose inserting transaction the INSERT waited for.
            IF made_count < cardinality(ids) THEN
                RETURN QUERY EXECUTE
                    'SELECT k.key_id::text, k.person_id, k.case_id, k.wrapped_key, k.master_key_version, false
                       FROM unnest($1::text[], $2::text[]) AS w(person_id, case_id)
                       JOIN {schema}.data_keys k ON k.case_id = w.case_id AND k.person_id = w.person_id
                      WHERE k.key_id <> ALL($3)'
                    USING persons, cases, ids;
            END IF;
            IF cardinality(known) > 0 THEN
                RETURN QUERY EXECUTE
                    'SELECT k.key_id::text, k.person_id, k.case_id, k.wrapped_key, k.master_key_version, false
                       FROM {schema}.data_keys k WHERE k.key_id = ANY($1)'
                    USING known;
            END IF;
        END
        $fn$;
        ALTER FUNCTION {schema}.data_keys_make(uuid[], text[], text[], bytea[], text[], uuid[]) OWNER TO rj_keystore;
        REVOKE ALL ON FUNCTION {schema}.data_keys_make(uuid[], text[], text[], bytea[], text[], uuid[]) FROM PUBLIC;
        """,
    ),
    (
        # data_keys_make with the new keys packed: their ids and wrapped bytes each in one bytea, one master key
        # version for them all (see ``_MAKE``). It calls data_keys_make, which is so still in use (a process of the
        # previous release calls it too): PostgreSQL records no dependency on a function named in another's body,
        # so dropping data_keys_make would stop every key being made. Lengths that do not fit the pairs are
        # refused: a key stored cut short would never unwrap, and the data sealed under it would be lost.
        "006_make_packed",
        """
        CREATE FUNCTION {schema}.data_keys_make_packed(ids bytea, persons text[], cases text[], wrapped bytea,
                                                       wrapped_len integer, version text, known uuid[])
        RETURNS TABLE (key_id text, person_id text, case_id text, wrapped_key bytea, master_key_version text,
                       made_here boolean)
        LANGUAGE plpgsql VOLATILE
        AS $fn$
        DECLARE
            n integer := coalesce(cardinality(persons), 0);
        BEGIN
            IF coalesce(cardinality(cases), 0) <> n OR coalesce(octet_length(ids), -1) <> 16 * n
               OR (n > 0 AND (wrapped_len < 29 OR coalesce(octet_length(wrapped), -1) <> wrapped_len * n)) THEN
                RAISE EXCEPTION 'data_keys_make_packed: % pairs, % cases, % id bytes, % wrapped bytes of % each',
                    n, cardinality(cases), octet_length(ids), octet_length(wrapped), wrapped_len
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            RETURN QUERY SELECT * FROM {schema}.data_keys_make(
                ARRAY(SELECT encode(substring(ids FROM (i - 1) * 16 + 1 FOR 16), 'hex')::uuid
                        FROM generate_series(1, n) AS i ORDER BY i),
                persons, cases,
                ARRAY(SELECT substring(wrapped FROM (i - 1) * wrapped_len + 1 FOR wrapped_len)
                        FROM generate_series(1, n) AS i ORDER BY i),
                array_fill(version, ARRAY[n]),
                known);
        END
        $fn$;
        ALTER FUNCTION {schema}.data_keys_make_packed(bytea, text[], text[], bytea, integer, text, uuid[])
            OWNER TO rj_keystore;
        REVOKE ALL ON FUNCTION {schema}.data_keys_make_packed(bytea, text[], text[], bytea, integer, text, uuid[])
            FROM PUBLIC;
        """,
    ),
    (
        # A case erased whole (its retention ran out: ``destroy_case``) stays erased for people met on it later:
        # a key made afterwards on it, for a pair that had none (a person added late, the case's own or monitoring
        # key never made before), is destroyed as it is made, so nothing written about the case after its erasure
        # is kept. A maker that made keys takes a shared advisory lock on their cases' stripes (16 stripes: advisory
        # locks take slots in PostgreSQL's shared lock table, and a batch of intake meets hundreds of new cases)
        # before it looks for erasures; an erasure of a case takes its stripe exclusively. So a key made while its
        # case is erased is either seen by the erasure (which waits for the maker to commit) or sees the erasure
        # (the maker waits for it to commit). Meeting pairs that have keys takes no lock and waits for no erasure.
        # data_keys_make keeps its signature (data_keys_make_packed calls it).
        "007_erased_cases",
        """
        CREATE TABLE {schema}.erased_cases (
            case_id text PRIMARY KEY,
            erased_at timestamptz NOT NULL DEFAULT now(),
            erased_by text NOT NULL,
            erase_reason text NOT NULL
        );
        ALTER TABLE {schema}.erased_cases OWNER TO rj_keystore;
        REVOKE ALL ON {schema}.erased_cases FROM PUBLIC;
        -- Cases erased whole before this migration: those whose own or monitoring key was destroyed (only a case's
        -- erasure, destroy_case, destroys either). A case erased with neither key made is not found here.
        INSERT INTO {schema}.erased_cases (case_id, erased_at, erased_by, erase_reason)
        SELECT DISTINCT ON (case_id) case_id, destroyed_at, coalesce(destroyed_by, 'unknown'),
               coalesce(destroy_reason, 'erased before erased cases were recorded')
          FROM {schema}.data_keys
         WHERE person_id IN ('(case)', '(monitoring)') AND destroyed_at IS NOT NULL
         ORDER BY case_id, destroyed_at
        ON CONFLICT (case_id) DO NOTHING;

        CREATE OR REPLACE FUNCTION {schema}.data_keys_make(ids uuid[], persons text[], cases text[], wrapped bytea[],
                                                           versions text[], known uuid[])
        RETURNS TABLE (key_id text, person_id text, case_id text, wrapped_key bytea, master_key_version text,
                       made_here boolean)
        LANGUAGE plpgsql VOLATILE
        SET enable_hashjoin = off SET enable_mergejoin = off
        AS $fn$
        DECLARE
            made_ids uuid[];
            made_persons text[];
            made_cases text[];
            erased_ids uuid[] := '{}';
        BEGIN
            IF current_setting('transaction_read_only') = 'off' THEN
                EXECUTE
                    'WITH inserted AS (
                         INSERT INTO {schema}.data_keys (key_id, person_id, case_id, wrapped_key, master_key_version)
                         SELECT u.* FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bytea[], $5::text[])
                                         AS u(key_id, person_id, case_id, wrapped_key, master_key_version)
                          WHERE NOT EXISTS (SELECT 1 FROM {schema}.data_keys k
                                             WHERE k.case_id = u.case_id AND k.person_id = u.person_id)
                         ON CONFLICT (case_id, person_id) DO NOTHING
                         RETURNING key_id, person_id, case_id
                     )
                     SELECT array_agg(key_id), array_agg(person_id), array_agg(case_id) FROM inserted'
                    INTO made_ids, made_persons, made_cases
                    USING ids, persons, cases, wrapped, versions;
                IF made_ids IS NOT NULL THEN
                    -- Each stripe once, in order; held until this transaction ends. Then a new statement: at READ
                    -- COMMITTED it sees an erasure committed while this waited.
                    PERFORM pg_advisory_xact_lock_shared(hashtext('rj.keystore.case'), stripe)
                       FROM (SELECT DISTINCT hashtext(c) & 15 AS stripe FROM unnest(made_cases) AS c ORDER BY 1) AS s;
                    IF EXISTS (SELECT 1 FROM {schema}.erased_cases AS e WHERE e.case_id = ANY(made_cases)) THEN
                        EXECUTE
                            'WITH destroyed AS (
                                 UPDATE {schema}.data_keys AS k
                                    SET wrapped_key = NULL, destroyed_at = now(), destroyed_by = e.erased_by,
                                        destroy_reason = e.erase_reason
                                   FROM {schema}.erased_cases AS e
                                  WHERE k.key_id = ANY($1) AND e.case_id = k.case_id
                                 RETURNING k.key_id
                             )
                             SELECT coalesce(array_agg(key_id), ''{}'') FROM destroyed'
                            INTO erased_ids
                            USING made_ids;
                    END IF;
                    RETURN QUERY
                        SELECT m.key_id::text, m.person_id, m.case_id, NULL::bytea, NULL::text,
                               m.key_id <> ALL(erased_ids)
                          FROM unnest(made_ids, made_persons, made_cases) AS m(key_id, person_id, case_id);
                END IF;
            END IF;
            -- Pairs that had a key (another process made it, or an erasure left it destroyed). A new statement at
            -- READ COMMITTED: it sees a key whose inserting transaction the INSERT waited for.
            IF coalesce(cardinality(made_ids), 0) < cardinality(ids) THEN
                RETURN QUERY EXECUTE
                    'SELECT k.key_id::text, k.person_id, k.case_id, k.wrapped_key, k.master_key_version, false
                       FROM unnest($1::text[], $2::text[]) AS w(person_id, case_id)
                       JOIN {schema}.data_keys k ON k.case_id = w.case_id AND k.person_id = w.person_id
                      WHERE k.key_id <> ALL($3)'
                    USING persons, cases, ids;
            END IF;
            IF cardinality(known) > 0 THEN
                RETURN QUERY EXECUTE
                    'SELECT k.key_id::text, k.person_id, k.case_id, k.wrapped_key, k.master_key_version, false
                       FROM {schema}.data_keys k WHERE k.key_id = ANY($1)'
                    USING known;
            END IF;
        END
        $fn$;
        """,
    ),
)


async def ensure_schema(conn: asyncpg.Connection) -> list[str]:
    """Create or bring up to date the ``keystore`` schema. Idempotent and safe from several processes at
    once (the services' migration runner: an advisory lock, each migration once, with its checksum)."""
    return await apply_migrations(conn, SCHEMA, _MIGRATIONS)


async def record_erased_cases(
    conn: asyncpg.Connection, cases: Sequence[tuple[str, datetime]], *, by: str, reason: str
) -> int:
    """Record ``(case id, when)`` cases as erased whole, where not yet: a case erased before the key store kept
    that record (migration ``007_erased_cases`` finds only those whose own or monitoring key existed). A key made on
    such a case in between (live, on a case erased whole) is destroyed with the record. Returns how many were new."""
    recorded, _ = await _erase_whole(conn, cases, by=by, reason=reason, destroy_on="newly recorded")
    return recorded


async def _erase_whole(
    conn: asyncpg.Connection,
    cases: Sequence[tuple[str, datetime | None]],
    *,
    by: str,
    reason: str,
    destroy_on: Literal["every case", "newly recorded"],
) -> tuple[int, list[str]]:
    """Record ``(case id, when)`` cases erased whole (``when`` None: now) where not yet, and destroy every live key on
    them (``destroy_on``: every one given, or only those recorded now), their stripes taken first (``_ERASING_CASES``):
    a key being made on one meanwhile is destroyed with it, or sees the record. (How many records were new, the ids of
    the keys destroyed.)"""
    if not cases:
        return 0, []
    ordered = sorted(dict(cases).items())
    async with conn.transaction():
        await conn.execute(_ERASING_CASES, [c for c, _ in ordered])
        recorded = [
            r[0]
            for r in await conn.fetch(
                f"""INSERT INTO {SCHEMA}.erased_cases (case_id, erased_at, erased_by, erase_reason)
                    SELECT c, coalesce(w, now()), $3, $4 FROM unnest($1::text[], $2::timestamptz[]) AS u(c, w)
                    ORDER BY c
                    ON CONFLICT (case_id) DO NOTHING RETURNING case_id""",
                [c for c, _ in ordered],
                [w for _, w in ordered],
                by,
                reason,
            )
        ]
        targets = [c for c, _ in ordered] if destroy_on == "every case" else recorded
        destroyed = (
            await conn.fetch(
                f"""UPDATE {SCHEMA}.data_keys
                    SET wrapped_key = NULL, destroyed_at = now(), destroyed_by = $2, destroy_reason = $3
                    WHERE case_id = ANY($1::text[]) AND wrapped_key IS NOT NULL RETURNING key_id::text""",
                targets,
                by,
                reason,
            )
            if targets
            else []
        )
    return len(recorded), sorted(r[0] for r in destroyed)


# --- the store ----------------------------------------------------------------------------------

_MAKE = f"""SELECT * FROM {SCHEMA}.data_keys_make_packed($1::bytea, $2::text[], $3::text[], $4::bytea, $5::integer,
                                                        $6::text, $7::uuid[])"""
"""Keys for pairs this process has not met ($2, $3), and for key ids ($6), in one round trip: the caller's new keys
($1, $4, $5, one a pair) are inserted where their pair has none, the pairs that had one are then looked up, and the
ids read; a row says whether this call made its key (``made_here``: its key is the one in hand). A new case's people
are so made with no separate lookup: in intake (40,000 events, 60,000 new keys) looking every new pair up first was
half the key store's cost to the database, 25 us an event of 49. A pair that had a key (a process that restarted,
another service meeting a case) costs a key made in vain (a few microseconds) and index probes. A pair whose key is
committed is never inserted again, so meeting it waits for no erasure or retention sweep holding its row (and cannot
deadlock with one); a read-only transaction only looks keys up.

The new keys' ids and wrapped bytes travel packed, each kind in one ``bytea`` (and their one master key version once):
asyncpg encodes an array element by element, 0.2-0.3 us each, and five arrays were 1.3 us of the referral process's
CPU a key made, against 0.4 us for the two arrays left (the pairs).

The lookups are queries PL/pgSQL plans with their values at each call, for data_keys as it is: a statement a session
keeps is settled by PostgreSQL on one generic plan after a few runs, made for the table as it was then, and a session
that began while the table was nearly empty (a fresh database, the first minutes of a deployment) would go on
scanning it whole as it grows. Measured over 30,000 keys: 6.8 ms a lookup with such a plan, 0.3 ms planned for the
table as it is; in a burst of 2,000 new cases, the lookups took 25 s of the database's time with plans kept."""

_BY_ID = f"""SELECT key_id::text, person_id, case_id, wrapped_key, master_key_version
             FROM {SCHEMA}.data_keys WHERE key_id = ANY($1::uuid[])"""
"""The keys with these ids: a plain statement (the primary key's index), 0.08 ms a lookup over 90,000 keys, against
0.23-0.39 ms for a query PL/pgSQL parses and plans at every call (as ``_MAKE``'s lookups are). Prepared on a table never
analyzed (as ``ensure_schema`` leaves it), PostgreSQL plans it for each call's values and uses the index at any size.
One caveat, measured: a table analyzed while it held a couple of hundred rows or fewer can settle the statement on a
generic sequential scan (14-24 ms over 300,000 keys) until it is prepared again; a service's sessions prepare their
statements again every ``DB_STATEMENT_REPLAN_S``, and an autoanalyze of the grown table replans it too."""

_ERASING_CASES = """SELECT pg_advisory_xact_lock(hashtext('rj.keystore.case'), stripe)
                     FROM (SELECT DISTINCT hashtext(c) & 15 AS stripe FROM unnest($1::text[]) AS c ORDER BY 1) AS s"""
"""Erasing cases excludes making new keys on cases of their stripes until the transaction ends (``data_keys_make``,
migration ``007_erased_cases``): each stripe once, in order, as makers take theirs."""

_REMEMBERED_PAIRS = 50_000
"""How many (person, case) -> key id pairs a process remembers (``KeyStore._pair_ids``): about 17 MB at most."""


class KeyStore:
    """Data keys and bucket keys in PostgreSQL, wrapped under ``master``."""

    def __init__(self, master: MasterKeys) -> None:
        self.master = master
        self._pair_ids: dict[PersonCase, str] = {}
        """The key id of each (person, case) pair this process has met, the most recent last. A pair's key id never
        changes once its row exists (erasure empties the row, never removes it), so a pair met before is looked up
        by its id (``_BY_ID``); the row is still read each time, so an erasure is seen as soon as it commits."""

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyStore:
        return cls(MasterKeys.from_settings(settings))

    # data keys

    async def data_keys_for(self, conn: asyncpg.Connection, pairs: Iterable[PersonCase]) -> dict[PersonCase, DataKey]:
        """The key of each (person id, case id), created where there is none yet. Two processes asking for the
        same new pair at once get the same key: each inserts with ON CONFLICT DO NOTHING, then reads."""
        keys, _ = await self._load(conn, set(pairs), set())
        return keys

    async def people_on(self, conn: asyncpg.Connection, case_id: str) -> set[str]:
        """The people with a data key on ``case_id``, live or destroyed (an erased person is still one whose data
        is not to be kept): those some service vouched for as on the case by sealing their data under it."""
        rows = await conn.fetch(
            f"SELECT person_id FROM {SCHEMA}.data_keys WHERE case_id = $1 AND person_id <> ALL($2::text[])",
            case_id,
            [CASE_PERSON, MONITORING_PERSON],
        )
        return {row["person_id"] for row in rows}

    async def keys_by_id(self, conn: asyncpg.Connection, key_ids: Iterable[str]) -> dict[str, DataKey]:
        """The keys with these ids (destroyed ones with ``aead`` None); an unknown id is absent."""
        ids = sorted(set(key_ids))
        if not ids:
            return {}
        return {k.key_id: k for k in map(self._unwrap, await conn.fetch(_BY_ID, ids))}

    async def _load(
        self, conn: asyncpg.Connection, pairs: set[PersonCase], ids: set[str]
    ) -> tuple[dict[PersonCase, DataKey], dict[str, DataKey]]:
        """Keys for ``pairs`` (creating the missing) and ``ids``, in one query. Pairs this process met before are
        asked for by their key id (``_BY_ID``); pairs new to it go through ``_MAKE``, which makes their keys where
        they have none."""
        by_pair: dict[PersonCase, DataKey] = {}
        by_id: dict[str, DataKey] = {}
        if not pairs and not ids:
            return by_pair, by_id

        def found(keys: Iterable[DataKey]) -> None:
            for key in keys:
                by_id[key.key_id] = key
                by_pair[(key.person_id, key.case_id)] = key
                self._remember((key.person_id, key.case_id), key.key_id)

        def read(rows: Iterable[asyncpg.Record]) -> None:
            found(map(self._unwrap, rows))

        known = {pair: key_id for pair in pairs if (key_id := self._pair_ids.get(pair)) is not None}
        asked = sorted(ids | set(known.values()))
        ordered = sorted(pairs)  # in order: concurrent inserts take locks alike
        new = [p for p in ordered if p not in known]
        if new:
            found(await self._make(conn, new, asked))
        else:
            read(await conn.fetch(_BY_ID, asked))
        strays = [p for p in ordered if p not in by_pair]  # a remembered id this database lacks
        if strays:
            for pair in strays:
                self._pair_ids.pop(pair, None)
            found(await self._make(conn, strays, []))
            lost = [p for p in strays if p not in by_pair]
            if lost:  # rows are never deleted: a pair with none is one no key could be made for here
                if await conn.fetchval("SELECT current_setting('transaction_read_only') = 'on'"):
                    raise KeyStoreError(
                        f"no key for {len(lost)} (person, case) pairs, and none can be made in a read-only "
                        "transaction (a standby, or a database made read-only, as after a failover)"
                    )
                raise KeyStoreError(f"the key store neither made nor found a key for {len(lost)} (person, case) pairs")
        return {p: by_pair[p] for p in pairs}, {i: by_id[i] for i in ids if i in by_id}

    def _remember(self, pair: PersonCase, key_id: str) -> None:
        remembered = self._pair_ids
        if remembered.pop(pair, None) is None and len(remembered) >= _REMEMBERED_PAIRS:
            for old in list(itertools.islice(remembered, _REMEMBERED_PAIRS // 2)):  # the half met least recently goes
                del remembered[old]
        remembered[pair] = key_id  # last: met most recently

    async def _make(self, conn: asyncpg.Connection, pairs: list[PersonCase], key_ids: list[str]) -> list[DataKey]:
        """The keys of ``pairs`` (new ones made here, where a pair has none) and of ``key_ids``, through ``_MAKE``."""
        new_ids, packed_ids = _random_key_ids_packed(len(pairs))
        material = os.urandom((KEY_BYTES + NONCE_BYTES) * len(pairs))  # each key, then the nonce it is wrapped with
        version = self.master.current
        wrapped_keys = []
        made: dict[str, DataKey] = {}
        wrap, step = self.master.wrap, KEY_BYTES + NONCE_BYTES
        for at, (person_id, case_id), key_id in zip(range(0, len(material), step), pairs, new_ids, strict=True):
            key, nonce = material[at : at + KEY_BYTES], material[at + KEY_BYTES : at + step]
            wrapped_keys.append(wrap(key, _data_key_aad(key_id, person_id, case_id), version, nonce=nonce)[1])
            made[key_id] = DataKey(key_id, person_id, case_id, AESGCM(key))
        if len({len(w) for w in wrapped_keys}) > 1:  # packed end to end, so each the same length (AES-GCM: always)
            raise KeyStoreError("wrapped keys of different lengths cannot be packed")
        rows = await conn.fetch(
            _MAKE,
            packed_ids,
            [p for p, _ in pairs],
            [c for _, c in pairs],
            b"".join(wrapped_keys),
            len(wrapped_keys[0]) if wrapped_keys else 0,
            version,
            key_ids,
        )
        keys = []
        for row in rows:
            if row[5]:  # made here: its key is the one in hand (the row carries no wrapped bytes)
                keys.append(made[row[0]])
            else:
                keys.append(self._unwrap(row))
        return keys

    def _unwrap(self, row: asyncpg.Record) -> DataKey:
        key_id, person_id, case_id, wrapped, version, *_ = row  # (``_MAKE`` adds whether it made the key)
        if wrapped is None:
            return DataKey(key_id, person_id, case_id, None)
        key = self.master.unwrap(version, wrapped, _data_key_aad(key_id, person_id, case_id), what=f"data key {key_id}")
        return DataKey(key_id, person_id, case_id, AESGCM(key))

    async def destroy(
        self, conn: asyncpg.Connection, person_id: str, case_id: str | None = None, *, by: str, reason: str
    ) -> list[str]:
        """Erase a person on one case, or on every case (``case_id`` None), by destroying their data keys.

        With a case, a key is recorded destroyed even when none existed yet, so that nothing written about
        that person on that case later is kept. Returns the ids of the keys destroyed now."""
        tombstones: list[asyncpg.Record] = []
        async with conn.transaction():
            if case_id is not None:
                tombstones = await conn.fetch(
                    f"""INSERT INTO {SCHEMA}.data_keys (key_id, person_id, case_id, destroyed_at, destroyed_by,
                                                        destroy_reason)
                        VALUES ($1, $2, $3, now(), $4, $5) ON CONFLICT (case_id, person_id) DO NOTHING
                        RETURNING key_id::text""",
                    str(uuid.uuid4()),
                    person_id,
                    case_id,
                    by,
                    reason,
                )
            rows = await conn.fetch(
                f"""UPDATE {SCHEMA}.data_keys
                    SET wrapped_key = NULL, destroyed_at = now(), destroyed_by = $3, destroy_reason = $4
                    WHERE person_id = $1 AND ($2::text IS NULL OR case_id = $2) AND wrapped_key IS NOT NULL
                    RETURNING key_id::text""",
                person_id,
                case_id,
                by,
                reason,
            )
        destroyed = sorted(r[0] for r in (*rows, *tombstones))
        log.info("data_keys_destroyed", person_id=person_id, case_id=case_id, keys=len(destroyed), by=by)
        return destroyed

    async def lock_cases_for_erasure(self, conn: asyncpg.Connection, case_ids: Iterable[str]) -> None:
        """Take, until the transaction ends, what erasing ``case_ids`` whole needs (``destroy_case`` takes its own
        case's): a transaction erasing several cases takes them all first, in one go, in the order key makers take
        theirs, and so never waits for a maker while holding what that maker waits for."""
        await conn.execute(_ERASING_CASES, sorted(set(case_ids)))

    async def destroy_case(self, conn: asyncpg.Connection, case_id: str, *, by: str, reason: str) -> list[str]:
        """Erase everyone's data on one case (its retention ran out), and whatever is written about it afterwards:
        the case is recorded erased, so a key asked for later on it, for anyone, is made destroyed (migration
        ``007_erased_cases``). Waits for any transaction making a key on the case to end, so that key is destroyed
        too. Returns the ids of the keys destroyed now."""
        _, destroyed = await _erase_whole(conn, [(case_id, None)], by=by, reason=reason, destroy_on="every case")
        log.info("case_keys_destroyed", case_id=case_id, keys=len(destroyed), by=by)
        return destroyed

    async def rotate(self, conn: asyncpg.Connection, to_version: str | None = None, *, batch_size: int = 500) -> int:
        """Re-wrap every live data and bucket key under ``to_version`` (default: the current master key).

        Runs beside live traffic: each batch is written only where the row still holds the bytes that were
        read (a key destroyed meanwhile stays destroyed), and readers accept every listed version throughout.
        Once it returns, older versions may be removed from settings. Returns how many keys were re-wrapped."""
        target = to_version or self.master.current
        self.master._aead(target, what="rotation target")
        count = 0
        for table, aad_of in (
            ("data_keys", lambda r: _data_key_aad(r["key_id"], r["person_id"], r["case_id"])),
            ("bucket_keys", lambda r: _bucket_key_aad(r["key_id"], r["bucket"])),
        ):
            owner = "person_id, case_id" if table == "data_keys" else "bucket"
            after = "00000000-0000-0000-0000-000000000000"
            while True:
                # One walk along the primary key: no index on the version is kept up on every key created.
                rows = await conn.fetch(
                    f"""SELECT key_id::text, {owner}, wrapped_key, master_key_version FROM {SCHEMA}.{table}
                        WHERE key_id > $3::uuid AND wrapped_key IS NOT NULL AND master_key_version <> $1
                        ORDER BY key_id LIMIT $2""",
                    target,
                    batch_size,
                    after,
                )
                if not rows:
                    break
                after = rows[-1]["key_id"]
                updates = []
                for row in rows:
                    aad = aad_of(row)
                    key = self.master.unwrap(row["master_key_version"], row["wrapped_key"], aad, what=f"key {row[0]}")
                    updates.append((row["key_id"], row["wrapped_key"], self.master.wrap(key, aad, target)[1]))
                done = await conn.fetch(
                    f"""UPDATE {SCHEMA}.{table} AS k SET wrapped_key = n.wrapped, master_key_version = $1
                        FROM unnest($2::uuid[], $3::bytea[], $4::bytea[]) AS n(key_id, old, wrapped)
                        WHERE k.key_id = n.key_id AND k.wrapped_key = n.old RETURNING k.key_id""",
                    target,
                    *zip(*updates, strict=True),
                )
                count += len(done)
        log.info("master_key_rotated", to_version=target, rewrapped=count)
        return count

    # time-bucket keys

    async def bucket_key(self, conn: asyncpg.Connection, when: datetime, granularity: Granularity = "day") -> BucketKey:
        """The key of the bucket ``when`` falls in, created if needed (race-safe like data keys)."""
        bucket, starts_at, ends_at = bucket_of(when, granularity)
        row = await conn.fetchrow(
            f"SELECT key_id::text, bucket, wrapped_key, master_key_version FROM {SCHEMA}.bucket_keys WHERE bucket = $1",
            bucket,
        )
        if row is None:
            key_id = str(uuid.uuid4())
            version, wrapped = self.master.wrap(AESGCM.generate_key(256), _bucket_key_aad(key_id, bucket))
            await conn.execute(
                f"""INSERT INTO {SCHEMA}.bucket_keys (key_id, bucket, starts_at, ends_at, wrapped_key,
                                                      master_key_version)
                    VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (bucket) DO NOTHING""",
                key_id,
                bucket,
                starts_at,
                ends_at,
                wrapped,
                version,
            )
            row = await conn.fetchrow(
                f"""SELECT key_id::text, bucket, wrapped_key, master_key_version FROM {SCHEMA}.bucket_keys
                    WHERE bucket = $1""",
                bucket,
            )
        return self._unwrap_bucket(row)

    async def bucket_keys_by_id(self, conn: asyncpg.Connection, key_ids: Iterable[str]) -> dict[str, BucketKey]:
        rows = await conn.fetch(
            f"""SELECT key_id::text, bucket, wrapped_key, master_key_version FROM {SCHEMA}.bucket_keys
                WHERE key_id = ANY($1::uuid[])""",
            sorted(set(key_ids)),
        )
        return {k.key_id: k for k in map(self._unwrap_bucket, rows)}

    def _unwrap_bucket(self, row: asyncpg.Record) -> BucketKey:
        key_id, bucket, wrapped, version = row
        if wrapped is None:
            return BucketKey(key_id, bucket, None)
        key = self.master.unwrap(version, wrapped, _bucket_key_aad(key_id, bucket), what=f"bucket key {key_id}")
        return BucketKey(key_id, bucket, AESGCM(key))

    async def destroy_buckets_ending_before(
        self, conn: asyncpg.Connection, cutoff: datetime, *, by: str, reason: str, sparing: Iterable[str] = ()
    ) -> list[str]:
        """Retention for whole records: destroy every bucket key whose bucket ended at or before ``cutoff``,
        but those ``sparing`` names (key ids still needed). Returns the buckets destroyed."""
        rows = await conn.fetch(
            f"""UPDATE {SCHEMA}.bucket_keys
                SET wrapped_key = NULL, destroyed_at = now(), destroyed_by = $2, destroy_reason = $3
                WHERE ends_at <= $1 AND wrapped_key IS NOT NULL AND NOT key_id = ANY($4::uuid[])
                RETURNING bucket""",
            cutoff,
            by,
            reason,
            sorted(set(sparing)),
        )
        log.info("bucket_keys_destroyed", cutoff=cutoff.isoformat(), buckets=len(rows), by=by)
        return sorted(r[0] for r in rows)


class KeyCache:
    """The keys one batch uses: ``load`` everything the batch needs first (one query when the keys exist),
    then encrypt and decrypt without awaiting. Make one per batch: a key destroyed after the batch began
    is seen by the next batch, not this one."""

    def __init__(self, store: KeyStore) -> None:
        self.store = store
        self.by_pair: dict[PersonCase, DataKey] = {}  # read-only outside: ``load`` fills it
        self._by_id: dict[str, DataKey] = {}
        self._absent: set[str] = set()  # ids asked for that the store does not hold
        self.loads = 0  # round trips made (for tests and metrics)
        self.sealed: dict[tuple[str, str, bytes], str] = {}  # (key id, field, value) -> its token, this batch
        self.token_parts: dict[tuple[str, str], tuple[str, bytes]] = {}  # (key id, field) -> token prefix, AAD
        # Fresh random nonces for AES-GCM, read from the operating system's generator a few hundred at a time (one
        # system call for a batch instead of one a value), each handed out once (``fieldcrypt._seal_value``).
        self.nonces, self.next_nonce = b"", 0

    async def load(
        self, conn: asyncpg.Connection, pairs: Iterable[PersonCase] = (), key_ids: Iterable[str] = ()
    ) -> None:
        want_pairs = set(pairs) - self.by_pair.keys()
        want_ids = set(key_ids) - self._by_id.keys() - self._absent
        if not want_pairs and not want_ids:
            return
        self.loads += 1
        by_pair, by_id = await self.store._load(conn, want_pairs, want_ids)
        for key in (*by_pair.values(), *by_id.values()):
            self.by_pair[(key.person_id, key.case_id)] = key
            self._by_id[key.key_id] = key
        self._absent |= want_ids - by_id.keys()

    def for_owner(self, person_id: str, case_id: str) -> DataKey:
        try:
            return self.by_pair[(person_id, case_id)]
        except KeyError:
            raise KeyError(f"no key loaded for person {person_id!r} on case {case_id!r}: load it first") from None

    def by_id(self, key_id: str) -> DataKey | None:
        """The key with this id, or None when it was asked for and does not exist."""
        return self._by_id.get(key_id)

    def loaded(self, key_id: str) -> bool:
        return key_id in self._by_id or key_id in self._absent
