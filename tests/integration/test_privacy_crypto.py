"""The key store and field encryption against the real PostgreSQL: every personal field of every model in the
contract round-trips and leaves no trace in the bytes; keys are per person per case; erasure shreds exactly
one person on one case; rotation keeps old data readable; creation is race-safe; a batch asks once; whole
records die with their time bucket."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from demo import samples
from schemas.pii import is_pii
from schemas.referral import CaseOpened, Participant, Role
from schemas.registry import REGISTRY
from services.runtime import fieldcrypt
from services.runtime.devstack import create_database, drop_database
from services.runtime.fieldcrypt import TamperedToken, decrypt_batch, encrypt_batch
from services.runtime.keystore import (
    CASE_PERSON,
    MONITORING_PERSON,
    NONCE_BYTES,
    KeyCache,
    KeyStore,
    KeyStoreError,
    MasterKeys,
    UnknownMasterKey,
    ensure_schema,
    record_erased_cases,
)
from services.runtime.settings import Settings

pytestmark = pytest.mark.integration

PII_MODELS = fieldcrypt.models_with_personal_data(REGISTRY.models.values())
V1 = MasterKeys.generate("v1")
V2 = MasterKeys.generate("v2")


@pytest.fixture(scope="module")
async def database(pg_server: str) -> AsyncIterator[str]:
    name = f"rj_test_{uuid.uuid4().hex[:10]}"
    url = await create_database(pg_server, name)
    conn = await asyncpg.connect(url)
    try:
        await ensure_schema(conn)
    finally:
        await conn.close()
    yield url
    await drop_database(pg_server, name)


@pytest.fixture
async def conn(database: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database)
    yield conn
    await conn.close()


def store(keys: str = V1) -> KeyStore:
    return KeyStore(MasterKeys.from_settings(Settings(master_keys=keys)))


def new_case() -> str:
    return f"case-{uuid.uuid4().hex[:12]}"


# --- a valid sample of any model, built from its JSON Schema, personal values easy to spot ----------


class Sampler:
    """Fills every property (optional ones too) of a model with valid values. Personal values are distinct
    and recognisable (``PII-<n>-...`` text, dates and times in 1911), so a test can look for each in bytes;
    times and dates increase through the document, which satisfies every 'ends after it starts' rule."""

    def __init__(self, text: Callable[[], str]) -> None:
        self.text = text
        self.n = 0
        self.personal: list[Any] = []

    def sample(self, model: type[BaseModel]) -> dict[str, Any]:
        schema = model.model_json_schema()
        self.defs = schema.get("$defs", {})
        return self.value(schema, False)  # type: ignore[no-any-return]

    def value(self, schema: dict[str, Any], pii: bool) -> Any:
        self.n += 1
        n = self.n
        pii = pii or is_pii(schema)
        if "$ref" in schema:
            return self.value(self.defs[schema["$ref"].rsplit("/", 1)[-1]], pii)
        for combinator in ("anyOf", "oneOf", "allOf"):
            if combinator in schema:
                options = [s for s in schema[combinator] if s.get("type") != "null"]
                return self.value(options[0], pii)
        if "enum" in schema:
            return schema["enum"][0]
        if "const" in schema:
            return schema["const"]
        kind = schema.get("type")
        if kind == "object":
            return {name: self.value(prop, pii) for name, prop in schema.get("properties", {}).items()}
        if kind == "array":
            return [self.value(schema["items"], pii) for _ in range(max(2, schema.get("minItems", 0)))]
        if kind == "boolean":
            return False
        if kind in ("integer", "number"):
            return max(1, schema.get("minimum", 1), schema.get("exclusiveMinimum", 0) + 1) if not pii else 1000 + n
        assert kind == "string", schema
        base = datetime(1911 if pii else 2026, 1, 1, tzinfo=UTC) + timedelta(minutes=n)
        fmt = schema.get("format")
        if fmt == "date-time":
            value: str = base.isoformat().replace("+00:00", "Z")
        elif fmt == "date":
            value = (date(1911 if pii else 2026, 1, 1) + timedelta(days=n)).isoformat()
        elif fmt == "time":
            value = time(n // 60 % 24, n % 60).isoformat()
        elif "examples" in schema:
            value = schema["examples"][0]
        elif "pattern" in schema:
            # A word of a fixed vocabulary (an actor's kind): no secret, and the same word may sit in clear in a
            # field that is not personal (another actor), so it is not counted as a personal value.
            return re.match(r"\^\(?([a-z_]+)", schema["pattern"]).group(1)  # type: ignore[union-attr]
        elif pii:
            value = f"PII-{n}-{self.text()}"
        else:
            value = f"x{n}"
        if pii:
            self.personal.append(value)
        return value


def leaks(blob: bytes, personal: list[Any]) -> list[Any]:
    text = blob.decode()
    return [v for v in personal if json.dumps(v, ensure_ascii=False).strip('"') in text]


# --- round trips ---------------------------------------------------------------------------------


def test_the_contract_has_personal_data_where_the_issue_says() -> None:
    names = {m.__name__ for m in PII_MODELS}
    assert {
        "CrimeRecorded",
        "CaseOpened",
        "ConsentWithdrawn",
        "ConsentDeclined",
        "AvailabilityRecorded",
    } <= names
    assert "CaseWithdrawn" not in names, "the participant-facing fact names no one"
    assert "CaseAccepted" not in names, "consent and scheduling are told who takes part, and no more"
    assert fieldcrypt.personal_paths(CaseOpened) == [
        "$.participants[].age_band",
        "$.participants[].contact",
        "$.participants[].custody_location",
        "$.participants[].date_of_birth",
        "$.participants[].ethnicity",
        "$.participants[].gender",
        "$.participants[].name",
    ]


@pytest.mark.parametrize("model", PII_MODELS, ids=lambda m: m.event_type)
async def test_every_personal_model_round_trips_with_no_personal_value_left_in_its_bytes(
    conn: asyncpg.Connection, model: type[BaseModel]
) -> None:
    sampler = Sampler(lambda: "Zoë O'Brien")
    original = model.model_validate(sampler.sample(model))
    document = original.model_dump(mode="json")
    assert sampler.personal, "the sample has personal values"
    assert leaks(json.dumps(document, ensure_ascii=False).encode(), sampler.personal)

    case = new_case()
    [encrypted] = await encrypt_batch(conn, KeyCache(store()), [(model, document, case)])
    blob = json.dumps(encrypted, ensure_ascii=False).encode()
    assert leaks(blob, sampler.personal) == []
    assert document == original.model_dump(mode="json"), "the caller's document is not changed"

    [decrypted] = await decrypt_batch(conn, KeyCache(store()), [(model, json.loads(blob))])
    assert decrypted.erased == ()
    assert model.model_validate(decrypted.data) == original


@pytest.mark.parametrize("model", PII_MODELS, ids=lambda m: m.event_type)
async def test_every_personal_model_still_loads_after_everyone_on_its_case_is_erased(
    conn: asyncpg.Connection, model: type[BaseModel]
) -> None:
    """Nothing breaks where a value cannot be decrypted: each erased value opens as a stand-in its schema
    accepts, so the event still validates and a service applies it (or a replay folds it)."""
    sampler = Sampler(lambda: "Zoë O'Brien")
    document = model.model_validate(sampler.sample(model)).model_dump(mode="json")
    case = new_case()
    [encrypted] = await encrypt_batch(conn, KeyCache(store()), [(model, document, case)])
    await conn.execute(
        "UPDATE keystore.data_keys SET wrapped_key = NULL, destroyed_at = now() WHERE case_id = $1", case
    )

    [opened] = await decrypt_batch(conn, KeyCache(store()), [(model, encrypted)])
    assert opened.erased, "every personal value was erased"
    assert leaks(json.dumps(opened.data, ensure_ascii=False).encode(), sampler.personal) == []
    model.model_validate(opened.data)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(min_size=1, max_size=30))
async def test_any_text_in_a_case_opened_round_trips_exactly(conn: asyncpg.Connection, text: str) -> None:
    sampler = Sampler(lambda: text)
    original = CaseOpened.model_validate(sampler.sample(CaseOpened))
    keys = KeyCache(store())
    [encrypted] = await encrypt_batch(conn, keys, [(CaseOpened, original.model_dump(mode="json"), "case-text")])
    [decrypted] = await decrypt_batch(conn, keys, [(CaseOpened, encrypted)])
    assert CaseOpened.model_validate(decrypted.data) == original
    assert leaks(json.dumps(encrypted, ensure_ascii=False).encode(), sampler.personal) == []


async def test_encrypting_an_encrypted_document_changes_nothing(conn: asyncpg.Connection) -> None:
    document = samples.crime_recorded("CR/1").model_dump(mode="json")
    keys = KeyCache(store())
    [once] = await encrypt_batch(conn, keys, [(type(samples.crime_recorded("CR/1")), document, "c-twice")])
    [twice] = await encrypt_batch(conn, keys, [(type(samples.crime_recorded("CR/1")), once, "c-twice")])
    assert twice == once


def opened(case_id: str, *people: str) -> CaseOpened:
    return CaseOpened.model_validate(
        {
            "case_id": case_id,
            "crime_reference": "CR/9",
            "offence": {"code": "105/1", "category": "violence"},
            "participants": [
                {
                    "person_id": p,
                    "role": "victim",
                    "required": True,
                    "name": f"Name of {p}",
                    "date_of_birth": "1980-02-03",
                    "contact": {"email": f"{p}@example.org", "phone": "+447700900123"},
                }
                for p in people
            ],
            "routes": [{"route": "admitted_outcome"}],
            "opened_at": "2026-01-01T10:00:00Z",
            "opened_by": {"kind": "system", "id": "referral-service"},
        }
    )


def key_ids_of(document: dict[str, Any]) -> dict[str, set[str]]:
    """Per participant, the key ids of their tokens."""
    return {
        p["person_id"]: {fieldcrypt.token_key_id(v) for k, v in p.items() if fieldcrypt.is_token(v)}
        for p in document["participants"]
    }


async def test_each_person_on_each_case_has_their_own_key(conn: asyncpg.Connection) -> None:
    first, second = new_case(), new_case()
    keys = KeyCache(store())
    a, b = await encrypt_batch(
        conn,
        keys,
        [
            (CaseOpened, opened(first, "ann", "bob").model_dump(mode="json"), first),
            (CaseOpened, opened(second, "ann").model_dump(mode="json"), second),
        ],
    )
    on_first, on_second = key_ids_of(a), key_ids_of(b)
    assert all(len(ids) == 1 for ids in (*on_first.values(), *on_second.values())), "one key per person per case"
    assert on_first["ann"] != on_first["bob"]
    assert on_first["ann"] != on_second["ann"]


async def test_a_token_moved_to_another_field_or_altered_is_refused_clearly(conn: asyncpg.Connection) -> None:
    case = new_case()
    keys = KeyCache(store())
    [doc] = await encrypt_batch(conn, keys, [(CaseOpened, opened(case, "ann").model_dump(mode="json"), case)])
    person = doc["participants"][0]
    moved = {**doc, "participants": [{**person, "name": person["contact"]}]}
    with pytest.raises(TamperedToken, match=r"participants\[0\]\.name.*fails authentication"):
        await decrypt_batch(conn, keys, [(CaseOpened, moved)])
    token = person["name"]
    altered = {
        **doc,
        "participants": [{**person, "name": token[:-6] + ("AAAA" if token[-6:-2] != "AAAA" else "BBBB") + token[-2:]}],
    }
    with pytest.raises(TamperedToken):
        await decrypt_batch(conn, keys, [(CaseOpened, altered)])
    unknown = {**doc, "participants": [{**person, "name": f"enc:v1:{uuid.uuid4()}:AAAA"}]}
    with pytest.raises(TamperedToken, match="does not hold"):
        await decrypt_batch(conn, keys, [(CaseOpened, unknown)])


# --- erasure -------------------------------------------------------------------------------------


async def test_erasing_a_person_on_a_case_shreds_only_their_fields_on_that_case(conn: asyncpg.Connection) -> None:
    first, second = new_case(), new_case()
    a, b = await encrypt_batch(
        conn,
        KeyCache(store()),
        [
            (CaseOpened, opened(first, "ann", "bob").model_dump(mode="json"), first),
            (CaseOpened, opened(second, "ann").model_dump(mode="json"), second),
        ],
    )
    destroyed = await store().destroy(conn, "ann", first, by="staff:dpo-1", reason="erasure request")
    assert len(destroyed) == 1

    after_a, after_b = await decrypt_batch(conn, KeyCache(store()), [(CaseOpened, a), (CaseOpened, b)], "[erased]")
    ann, bob = after_a.data["participants"]
    assert ann["name"] == ann["contact"] == ann["date_of_birth"] == "[erased]"
    assert ann["person_id"] == "ann" and ann["role"] == "victim", "the history stays readable"
    assert bob["name"] == "Name of bob" and bob["contact"]["email"] == "bob@example.org"
    assert sorted(after_a.erased) == [
        "$.participants[0].contact",
        "$.participants[0].date_of_birth",
        "$.participants[0].name",
    ]
    assert after_b.erased == () and after_b.data["participants"][0]["name"] == "Name of ann"

    # the default placeholder is None, which every optional personal field accepts
    [plain] = await decrypt_batch(conn, KeyCache(store()), [(CaseOpened, a)])
    assert CaseOpened.model_validate(plain.data).participants[0].name is None

    # what arrives about her on that case afterwards is not kept
    [later] = await encrypt_batch(
        conn, KeyCache(store()), [(CaseOpened, opened(first, "ann").model_dump(mode="json"), first)]
    )
    assert "Name of ann" not in json.dumps(later)
    [seen] = await decrypt_batch(conn, KeyCache(store()), [(CaseOpened, later)])
    assert seen.data["participants"][0]["name"] is None

    row = await conn.fetchrow("SELECT * FROM keystore.data_keys WHERE key_id = $1", uuid.UUID(destroyed[0]))
    assert (
        row["wrapped_key"] is None
        and row["destroyed_by"] == "staff:dpo-1"
        and row["destroy_reason"] == "erasure request"
    )


async def test_erasing_a_person_everywhere_and_before_any_key_existed(conn: asyncpg.Connection) -> None:
    first, second, third = new_case(), new_case(), new_case()
    await store().data_keys_for(conn, [("cat", first), ("cat", second), ("dan", first)])
    assert len(await store().destroy(conn, "cat", by="staff:dpo-1", reason="erasure request")) == 2
    keys = await store().data_keys_for(conn, [("cat", first), ("cat", second), ("dan", first)])
    assert keys[("cat", first)].destroyed and keys[("cat", second)].destroyed and not keys[("dan", first)].destroyed

    # erased on a case where nothing was written yet: later writes find the key destroyed
    assert len(await store().destroy(conn, "eve", third, by="staff:dpo-1", reason="erasure request")) == 1
    assert (await store().data_keys_for(conn, [("eve", third)]))[("eve", third)].destroyed


async def test_who_withdrew_is_under_the_cases_key_why_under_hers_and_free_text_on_the_case_under_the_cases(
    conn: asyncpg.Connection,
) -> None:
    case = new_case()
    sampler = Sampler(lambda: "because")
    models = {m.__name__: m for m in PII_MODELS}
    withdrawn = models["ConsentWithdrawn"].model_validate(
        {**sampler.sample(models["ConsentWithdrawn"]), "person_id": "fay"}
    )
    closed = models["CaseClosed"].model_validate(sampler.sample(models["CaseClosed"]))
    keys = KeyCache(store())
    w, c = await encrypt_batch(
        conn,
        keys,
        [
            (type(withdrawn), withdrawn.model_dump(mode="json"), case),
            (type(closed), closed.model_dump(mode="json"), case),
        ],
    )
    # Who withdrew is under the case's key (it outlives her erasure, rule 7: ids are kept; under hers, a token's key
    # id would match her data on the case opened and name who withdrew); why, her own words, is under hers and goes
    # with her.
    owners = {name: keys.by_id(fieldcrypt.token_key_id(w[name])) for name in ("person_id", "withdrawn_by", "reason")}
    assert {name: key.person_id for name, key in owners.items() if key is not None} == {
        "person_id": CASE_PERSON,
        "withdrawn_by": CASE_PERSON,
        "reason": "fay",
    }
    case_key = keys.by_id(fieldcrypt.token_key_id(c["detail"]))
    assert case_key is not None and case_key.person_id == CASE_PERSON


# --- rotation ------------------------------------------------------------------------------------


async def test_data_written_before_a_rotation_reads_after_it_and_an_unrotated_key_fails_clearly(
    pg_server: str,
) -> None:
    # a database of its own: rotation touches every key
    name = f"rj_test_{uuid.uuid4().hex[:10]}"
    url = await create_database(pg_server, name)
    own = await asyncpg.connect(url)
    try:
        await ensure_schema(own)
        case = new_case()
        [before] = await encrypt_batch(
            own, KeyCache(store(V1)), [(CaseOpened, opened(case, "gus").model_dump(mode="json"), case)]
        )
        bucket = await store(V1).bucket_key(own, datetime(2026, 3, 1, tzinfo=UTC))
        sealed = fieldcrypt.encrypt_bytes(b"upstream record", bucket)

        # v2 becomes current; v1 still listed: everything reads, during and after the rotation
        both = store(f"{V2},{V1}")
        [during] = await decrypt_batch(own, KeyCache(both), [(CaseOpened, before)])
        assert during.data["participants"][0]["name"] == "Name of gus"
        assert await both.rotate(own) == 2
        assert await both.rotate(own) == 0, "nothing left to re-wrap"
        versions = {r[0] for r in await own.fetch("SELECT master_key_version FROM keystore.data_keys")}
        assert versions == {"v2"}

        # v1 removed from settings: data from before the rotation still reads
        only_v2 = store(V2)
        [after] = await decrypt_batch(own, KeyCache(only_v2), [(CaseOpened, before)])
        assert after.data["participants"][0]["name"] == "Name of gus"
        [key] = (await only_v2.bucket_keys_by_id(own, [fieldcrypt.bytes_key_id(sealed)])).values()
        assert fieldcrypt.decrypt_bytes(sealed, key) == b"upstream record"

        # a key left under v1 (written by a process still on v1) fails clearly once v1 is gone
        other = new_case()
        [stale] = await encrypt_batch(
            own, KeyCache(store(V1)), [(CaseOpened, opened(other, "hal").model_dump(mode="json"), other)]
        )
        with pytest.raises(UnknownMasterKey, match=r"master key version 'v1', which MASTER_KEYS does not list"):
            await decrypt_batch(own, KeyCache(only_v2), [(CaseOpened, stale)])
        # and a master key of the right name but the wrong bytes is told apart from tampering
        with pytest.raises(KeyStoreError, match="does not unwrap"):
            await decrypt_batch(own, KeyCache(store(MasterKeys.generate("v1"))), [(CaseOpened, stale)])
    finally:
        await own.close()
        await drop_database(pg_server, name)


def test_master_keys_come_from_settings_or_a_file_and_are_checked(tmp_path: Any) -> None:
    path = tmp_path / "master.keys"
    path.write_text(f"{V2}\n{V1}\n")
    keys = MasterKeys.from_settings(Settings(master_key_file=path))
    assert keys.current == "v2" and set(keys.keys) == {"v1", "v2"}
    from services.runtime.keystore import MasterKeyConfigError

    for bad in ("", "v1", "v1:not-base64!", "v1:AAAA", f"{V1},{V1}"):
        with pytest.raises(MasterKeyConfigError):
            MasterKeys.parse(bad)


# --- concurrency and the per-batch cache -----------------------------------------------------------


async def test_two_processes_asking_for_a_new_persons_key_at_once_get_the_same_key(database: str) -> None:
    conns = [await asyncpg.connect(database) for _ in range(4)]
    try:
        for _ in range(10):
            case = new_case()
            pairs = [("ivy", case), ("jon", case)]
            results = await asyncio.gather(*(store().data_keys_for(c, pairs) for c in conns))
            for pair in pairs:
                assert len({r[pair].key_id for r in results}) == 1
            count = await conns[0].fetchval("SELECT count(*) FROM keystore.data_keys WHERE case_id = $1", case)
            assert count == 2
    finally:
        for c in conns:
            await c.close()


async def test_schema_setup_is_idempotent_and_safe_to_run_at_once(database: str) -> None:
    conns = [await asyncpg.connect(database) for _ in range(3)]
    try:
        assert await asyncio.gather(*(ensure_schema(c) for c in conns)) == [[], [], []]
    finally:
        for c in conns:
            await c.close()


@pytest.fixture
def queries(conn: asyncpg.Connection) -> Iterator[list[str]]:
    seen: list[str] = []
    conn.add_query_logger(lambda record: seen.append(record.query))
    yield seen


async def _logged() -> None:
    """asyncpg hands a query to its loggers with ``call_soon``: let those calls run."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_a_batch_asks_the_key_store_once(conn: asyncpg.Connection, queries: list[str]) -> None:
    cases = [new_case() for _ in range(20)]
    docs = [(CaseOpened, opened(c, "kim", "lee").model_dump(mode="json"), c) for c in cases]
    await encrypt_batch(conn, KeyCache(store()), docs)  # creates 40 keys

    await _logged()
    queries.clear()
    keys = KeyCache(store())
    encrypted = await encrypt_batch(conn, keys, docs)
    await decrypt_batch(conn, keys, [(CaseOpened, d) for d in encrypted])
    await _logged()
    assert len(queries) == 1, "one query for the batch's keys; decrypting them needs none"

    queries.clear()
    await decrypt_batch(conn, KeyCache(store()), [(CaseOpened, d) for d in encrypted])
    await _logged()
    assert len(queries) == 1


async def test_a_pair_met_before_is_asked_for_by_its_id_and_its_erasure_is_seen_at_once(
    pg_server: str, database: str, conn: asyncpg.Connection, queries: list[str]
) -> None:
    """A process remembers the key id of each (person, case) it met; the row is still read every batch, by that id
    (a statement whose plan fits a table of any size), so an erasure is seen by the next batch, and a remembered id
    another database lacks is asked for by its pair (and made there)."""
    keys = store()
    case = new_case()
    first = await keys.data_keys_for(conn, [("mo", case)])
    await _logged()
    queries.clear()
    again = await keys.data_keys_for(conn, [("mo", case)])
    await _logged()
    assert again[("mo", case)].key_id == first[("mo", case)].key_id
    assert again[("mo", case)].aead is not None
    assert len(queries) == 1 and "data_keys_for" not in queries[0] and "key_id = ANY" in queries[0]

    await keys.destroy(conn, "mo", case, by="test", reason="erasure")
    assert (await keys.data_keys_for(conn, [("mo", case)]))[("mo", case)].aead is None, "erased: seen at once"

    other = f"rj_test_{uuid.uuid4().hex[:10]}"
    url = await create_database(pg_server, other)
    try:
        elsewhere = await asyncpg.connect(url)
        try:
            await ensure_schema(elsewhere)
            made = await keys.data_keys_for(elsewhere, [("mo", case)])
            assert made[("mo", case)].aead is not None and made[("mo", case)].key_id != first[("mo", case)].key_id
            stored = await elsewhere.fetchval("SELECT key_id::text FROM keystore.data_keys WHERE case_id = $1", case)
            assert stored == made[("mo", case)].key_id
        finally:
            await elsewhere.close()
    finally:
        await drop_database(pg_server, other)
    back = await keys.data_keys_for(conn, [("mo", case)])
    assert back[("mo", case)].key_id == first[("mo", case)].key_id and back[("mo", case)].aead is None


async def test_keys_for_pairs_a_process_has_not_met_are_made_or_found_in_one_statement(
    conn: asyncpg.Connection, queries: list[str]
) -> None:
    """A new case's people get their keys with no lookup first; a pair that has a key (made by another process, or
    destroyed by an erasure) is found, never made again; pairs met before are read by id in the same round trip."""
    case, other = new_case(), new_case()
    elsewhere = await store().data_keys_for(conn, [("ann", case)])  # another process made Ann's key
    await store().destroy(conn, "bob", case, by="test", reason="erasure")  # Bob was erased before any key
    keys = store()
    met = await keys.data_keys_for(conn, [("cy", other)])
    await _logged()
    queries.clear()
    got = await keys.data_keys_for(conn, [("ann", case), ("bob", case), ("cy", other), ("di", case)])
    await _logged()
    assert len(queries) == 1 and "data_keys_make" in queries[0]
    assert got[("ann", case)].key_id == elsewhere[("ann", case)].key_id and got[("ann", case)].aead is not None
    assert got[("bob", case)].aead is None, "an erased pair stays erased"
    assert got[("cy", other)].key_id == met[("cy", other)].key_id
    rows = await conn.fetch("SELECT person_id, key_id::text FROM keystore.data_keys WHERE case_id = $1", case)
    assert sorted(r[0] for r in rows) == ["ann", "bob", "di"], "one row a pair: nothing made twice"
    assert dict(rows)["di"] == got[("di", case)].key_id

    sealed = got[("di", case)].aead
    assert sealed is not None
    nonce = b"\x00" * 12
    text = sealed.encrypt(nonce, b"di's name", None)
    read_back = await store().data_keys_for(conn, [("di", case)])  # another process, reading the stored key
    assert read_back[("di", case)].aead is not None
    assert read_back[("di", case)].aead.decrypt(nonce, text, None) == b"di's name"


async def test_packed_new_keys_that_do_not_fit_their_pairs_are_refused_whole(conn: asyncpg.Connection) -> None:
    """The packed keys are cut by length: ids, pairs or wrapped bytes that do not add up are refused, so that no key
    is ever stored cut short (it would never unwrap: whatever was sealed under it would be lost)."""
    case = new_case()
    sql = "SELECT * FROM keystore.data_keys_make_packed($1, $2, $3, $4, $5, $6, $7)"
    ids = uuid.uuid4().bytes + uuid.uuid4().bytes
    good = (ids, ["p1", "p2"], [case, case], b"w" * 120, 60, "m1", [])
    for at, wrong in ((0, ids[:-1]), (2, [case]), (3, b"w" * 119), (4, 0), (0, ids + b"x" * 16)):
        args = list(good)
        args[at] = wrong
        with pytest.raises(asyncpg.InvalidParameterValueError, match="data_keys_make_packed"):
            await conn.fetch(sql, *args)
    assert await conn.fetchval("SELECT count(*) FROM keystore.data_keys WHERE case_id = $1", case) == 0
    assert await conn.fetch(sql, b"", [], [], b"", 0, "m1", []) == []  # no pairs: nothing to do
    made = await conn.fetch(sql, *good)
    assert sorted((r["person_id"], r["made_here"]) for r in made) == [("p1", True), ("p2", True)]
    stored = await conn.fetch("SELECT key_id, wrapped_key FROM keystore.data_keys WHERE case_id = $1", case)
    assert sorted(r["key_id"].bytes for r in stored) == sorted([ids[:16], ids[16:]])
    assert all(r["wrapped_key"] == b"w" * 60 for r in stored)


async def test_meeting_a_pair_waits_for_no_erasure_in_flight_and_works_in_a_read_only_transaction(
    database: str, conn: asyncpg.Connection
) -> None:
    """A pair with a committed key is never inserted again: a process meeting it does not wait for a transaction
    that holds its row (an erasure, the retention sweep) and so cannot deadlock with one; and a read-only
    transaction (a standby) reads the keys of pairs it meets rather than failing on an insert."""
    case = new_case()
    made = await store().data_keys_for(conn, [("gil", case), ("hal", case)])
    eraser = await asyncpg.connect(database)
    try:
        erasure = eraser.transaction()
        await erasure.start()
        await store().destroy(eraser, "gil", case, by="test", reason="erasure in flight")
        met = await asyncio.wait_for(store().data_keys_for(conn, [("hal", case), ("gil", case)]), timeout=5)
        assert met[("gil", case)].key_id == made[("gil", case)].key_id
        assert met[("gil", case)].aead is not None, "the erasure has not committed: the key is still live"
        await erasure.commit()
    finally:
        await eraser.close()
    assert (await store().data_keys_for(conn, [("gil", case)]))[("gil", case)].aead is None

    async with conn.transaction(readonly=True):
        read = await store().data_keys_for(conn, [("hal", case), ("gil", case)])
    assert read[("hal", case)].key_id == made[("hal", case)].key_id and read[("hal", case)].aead is not None
    assert read[("gil", case)].aead is None
    with pytest.raises(KeyStoreError, match="read-only"):  # a new pair's key cannot be made there: said so
        async with conn.transaction(readonly=True):
            await store().data_keys_for(conn, [("ivo", case)])


async def test_a_case_erased_whole_stays_erased_for_every_key_asked_for_on_it_later(conn: asyncpg.Connection) -> None:
    """Retention erased the case: a person added to it afterwards, or its own or monitoring key never made before,
    gets a key destroyed as it is made (by whom and why the case's erasure says), so nothing written about the case
    later is kept; another case is untouched."""
    case, other = new_case(), new_case()
    before = await store().data_keys_for(conn, [("jo", case)])
    destroyed = await store().destroy_case(conn, case, by="retention", reason="retention period ended")
    assert destroyed == [before[("jo", case)].key_id]
    fresh = KeyStore(store().master)  # a process that never met the case
    late = await fresh.data_keys_for(
        conn, [("kit", case), (CASE_PERSON, case), (MONITORING_PERSON, case), ("kit", other)]
    )
    assert all(late[(p, case)].aead is None for p in ("kit", CASE_PERSON, MONITORING_PERSON))
    assert late[("kit", other)].aead is not None
    rows = await conn.fetch(
        "SELECT person_id, destroyed_by, destroy_reason FROM keystore.data_keys WHERE case_id = $1 ORDER BY 1", case
    )
    assert [tuple(r) for r in rows] == [
        (p, "retention", "retention period ended") for p in sorted(["jo", "kit", CASE_PERSON, MONITORING_PERSON])
    ]
    again = await store().data_keys_for(conn, [("kit", case)])  # and so it stays, asked again by anyone
    assert again[("kit", case)].key_id == late[("kit", case)].key_id and again[("kit", case)].aead is None
    kit = Participant(person_id="kit", role=Role.victim, required=True, name="Kit Marlowe").model_dump(mode="json")
    [sealed] = await encrypt_batch(conn, KeyCache(fresh), [(Participant, kit, case)])
    assert sealed["name"] == f"enc:v1:{late[('kit', case)].key_id}:", "written after the erasure: nothing kept"


async def test_a_key_made_while_its_case_is_erased_is_destroyed_whichever_commits_first(database: str) -> None:
    """A key made on a case in the same moment as the case's erasure: the erasure waits for the maker and destroys
    the key, or the maker waits for the erasure and makes the key destroyed; never a live key on an erased case."""
    maker, eraser = await asyncpg.connect(database), await asyncpg.connect(database)
    try:
        # The maker first: the erasure waits for its commit, then destroys what it made.
        case = new_case()
        making = maker.transaction()
        await making.start()
        made = await store().data_keys_for(maker, [("lou", case)])
        erasing = asyncio.ensure_future(store().destroy_case(eraser, case, by="retention", reason="due"))
        await asyncio.sleep(0.3)
        assert not erasing.done(), "the erasure waits for the key being made"
        await making.commit()
        assert await asyncio.wait_for(erasing, 5) == [made[("lou", case)].key_id]
        assert (await store().data_keys_for(maker, [("lou", case)]))[("lou", case)].aead is None

        # The erasure first: the maker waits for its commit, then makes the key destroyed.
        case = new_case()
        erasure = eraser.transaction()
        await erasure.start()
        await store().destroy_case(eraser, case, by="retention", reason="due")
        making_ = asyncio.ensure_future(store().data_keys_for(maker, [("mo", case)]))
        await asyncio.sleep(0.3)
        assert not making_.done(), "the key waits for the erasure in flight"
        await erasure.commit()
        late = await asyncio.wait_for(making_, 5)
        assert late[("mo", case)].aead is None
    finally:
        await maker.close()
        await eraser.close()


async def test_erasing_several_cases_at_once_takes_what_it_needs_first_and_never_deadlocks_with_a_key_maker(
    database: str, conn: asyncpg.Connection
) -> None:
    """The retention sweep erases many cases in one transaction. It takes what they need in the key store at once,
    in the order key makers take theirs (``lock_cases_for_erasure``), then erases each: a maker making keys on cases
    of the same stripes waits for it and gets destroyed keys, and neither fails (found in review: erased one by
    one, a case on stripe 9 then one on stripe 2, the sweep deadlocked with a maker on stripes 2 and 9)."""

    async def case_on(stripe: int) -> str:
        while True:
            case = new_case()
            if await conn.fetchval("SELECT hashtext($1) & 15", case) == stripe:
                return case

    erased = [await case_on(9), await case_on(2)]  # in the sweep's order, not the stripes'
    making_on = [await case_on(2), await case_on(9)]
    eraser, maker = await asyncpg.connect(database), await asyncpg.connect(database)
    try:
        sweep = eraser.transaction()
        await sweep.start()
        await store().lock_cases_for_erasure(eraser, erased)
        await store().destroy_case(eraser, erased[0], by="retention", reason="due")
        making = maker.transaction()
        await making.start()
        keys = asyncio.ensure_future(store().data_keys_for(maker, [("pip", c) for c in making_on]))
        await asyncio.sleep(0.3)
        assert not keys.done(), "the maker waits for the sweep"
        await store().destroy_case(eraser, erased[1], by="retention", reason="due")
        await sweep.commit()
        made = await asyncio.wait_for(keys, 5)
        await making.commit()
        assert all(made[("pip", c)].aead is not None for c in making_on), "cases not erased: live keys"
    finally:
        await eraser.close()
        await maker.close()


async def test_a_case_erased_before_erasures_were_recorded_is_recorded_by_the_privacy_service_and_stays_erased(
    conn: asyncpg.Connection,
) -> None:
    """A case the retention sweep erased before the key store recorded erased cases, with neither its own nor its
    monitoring key made (which migration 007 finds): the privacy service records it at start
    (``record_erased_cases``, from its own cases), once: a key made on it since is destroyed, and one made on it
    afterwards is made destroyed."""
    case = new_case()
    await store().data_keys_for(conn, [("ned", case)])
    await conn.execute(  # destroy_case as it was: the keys only
        "UPDATE keystore.data_keys SET wrapped_key = NULL, destroyed_at = now(), destroyed_by = 'privacy', "
        "destroy_reason = 'retention period ended' WHERE case_id = $1",
        case,
    )
    ola = await KeyStore(store().master).data_keys_for(conn, [("ola", case)])  # made on it before the record
    assert ola[("ola", case)].aead is not None
    when = datetime(2026, 1, 2, tzinfo=UTC)
    assert await record_erased_cases(conn, [(case, when)], by="privacy", reason="retention period ended") == 1
    assert await record_erased_cases(conn, [(case, when)], by="privacy", reason="retention period ended") == 0
    late = await KeyStore(store().master).data_keys_for(conn, [("pat", case), ("ola", case)])
    assert late[("pat", case)].aead is None
    assert late[("ola", case)].aead is None, "a key made on the erased case before it was recorded goes with it"


# --- whole records -------------------------------------------------------------------------------


async def test_a_whole_record_reads_until_its_bucket_is_destroyed_by_retention(conn: asyncpg.Connection) -> None:
    st_ = store()
    old_day = datetime(2020, 1, 5, 13, 0, tzinfo=UTC)
    new_day = datetime(2020, 1, 7, 9, 0, tzinfo=UTC)
    old_key, same_key, new_key = (
        await st_.bucket_key(conn, old_day),
        await st_.bucket_key(conn, old_day + timedelta(hours=5)),
        await st_.bucket_key(conn, new_day),
    )
    assert old_key.key_id == same_key.key_id != new_key.key_id
    record = samples.upstream_event(samples.crime_recorded("CR/bytes"))
    old, new = (fieldcrypt.encrypt_bytes(record, k, b"crime.events") for k in (old_key, new_key))
    assert b"Victim" not in old and b"example.org" not in old
    assert fieldcrypt.decrypt_bytes(old, old_key, b"crime.events") == record
    with pytest.raises(TamperedToken):
        fieldcrypt.decrypt_bytes(old, old_key, b"rj.deadletter")
    with pytest.raises(TamperedToken):
        fieldcrypt.decrypt_bytes(old[:-1] + bytes([old[-1] ^ 1]), old_key, b"crime.events")

    gone = await st_.destroy_buckets_ending_before(
        conn, datetime(2020, 1, 6, tzinfo=UTC), by="retention", reason="30 days"
    )
    assert "day:2020-01-05" in gone and "day:2020-01-07" not in gone
    keys = await st_.bucket_keys_by_id(conn, [fieldcrypt.bytes_key_id(old), fieldcrypt.bytes_key_id(new)])
    assert fieldcrypt.decrypt_bytes(old, keys[old_key.key_id], b"crime.events") is None
    assert fieldcrypt.decrypt_bytes(new, keys[new_key.key_id], b"crime.events") == record

    month = await st_.bucket_key(conn, new_day, "month")
    assert month.bucket == "month:2020-01"


async def test_the_key_store_has_its_own_role_and_nothing_for_anyone_else(conn: asyncpg.Connection) -> None:
    owners = await conn.fetch(
        "SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'keystore' AND tablename LIKE '%keys'"
    )
    assert {(r["tablename"], r["tableowner"]) for r in owners} == {
        ("data_keys", "rj_keystore"),
        ("bucket_keys", "rj_keystore"),
    }
    assert await conn.fetchval("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'keystore'") == (
        "rj_keystore"
    )
    public = await conn.fetchval(
        """SELECT count(*) FROM information_schema.role_table_grants
            WHERE table_schema = 'keystore' AND grantee = 'PUBLIC'"""
    )
    assert public == 0
    await ensure_schema(conn)  # again, and from another database of the same server: the role is shared


async def test_rotation_walks_every_key_a_page_at_a_time(pg_server: str) -> None:
    name = f"rj_test_{uuid.uuid4().hex[:10]}"
    url = await create_database(pg_server, name)
    own = await asyncpg.connect(url)
    try:
        await ensure_schema(own)
        cases = [new_case() for _ in range(7)]
        items = [(CaseOpened, opened(case, f"p{i}").model_dump(mode="json"), case) for i, case in enumerate(cases)]
        sealed = await encrypt_batch(own, KeyCache(store(V1)), items)
        both = store(f"{V2},{V1}")
        assert await both.rotate(own, batch_size=2) == 7
        assert {r[0] for r in await own.fetch("SELECT master_key_version FROM keystore.data_keys")} == {"v2"}
        opened_after = await decrypt_batch(own, KeyCache(store(V2)), [(CaseOpened, s) for s in sealed])
        assert [o.data["participants"][0]["name"] for o in opened_after] == [f"Name of p{i}" for i in range(7)]
    finally:
        await own.close()
        await drop_database(pg_server, name)


async def test_a_model_read_sealed_and_written_back_unchanged_keeps_its_tokens(conn: asyncpg.Connection) -> None:
    from schemas.upstream import CrimeRecorded
    from services.runtime.privacy import Privacy

    privacy, case = Privacy(store()), new_case()
    crime = samples.crime_recorded("WM/2026/777001")
    (sealed,) = await privacy.new_batch().seal_models(conn, CrimeRecorded, [(crime, case)])
    assert sealed is not None and crime.victims[0].name not in sealed

    batch = privacy.new_batch()  # the next transaction reads it, decides nothing about it, writes it back
    read, legacy = await batch.open_models(conn, CrimeRecorded, [sealed, crime.model_dump_json()], [case, case])
    assert read == crime and legacy == crime
    assert read is not None and legacy is not None
    again, equal, plain = await batch.seal_models(
        conn, CrimeRecorded, [(read, case), (read.model_copy(), case), (legacy, case)]
    )
    assert again == sealed  # the very tokens it was read with: not opened and sealed again
    for text in (equal, plain):  # a model of the decision's own, or one read in clear: sealed afresh
        assert text is not None and text != sealed and crime.victims[0].name not in text
        (opened,) = await privacy.new_batch().open_models(conn, CrimeRecorded, [text], [case])
        assert opened == crime


def test_new_keys_have_random_uuid_ids_and_their_wrapping_context_is_the_json_it_always_was() -> None:
    from services.runtime.keystore import _data_key_aad, _random_key_ids_packed

    ids, _ = _random_key_ids_packed(500)
    assert len(set(ids)) == 500
    assert all(str(uuid.UUID(i)) == i and uuid.UUID(i).version == 4 for i in ids)
    assert all(uuid.UUID(i).variant == uuid.RFC_4122 for i in ids)
    texts, packed = _random_key_ids_packed(300)  # as _MAKE takes them: 16 bytes each, end to end
    assert [str(uuid.UUID(bytes=packed[at : at + 16])) for at in range(0, len(packed), 16)] == texts
    for person, case in [("V-1", "c"), ('a "quoted" \\ name', "é"), ("\x00\n\u2028", "𝄞"), (CASE_PERSON, "")]:
        assert _data_key_aad(ids[0], person, case) == json.dumps(["rj-data-key", ids[0], person, case]).encode()


def test_a_key_wraps_only_under_a_nonce_of_the_length_unwrap_reads() -> None:
    """``unwrap`` takes the first NONCE_BYTES of a wrapped key as its nonce: a nonce of any other length, handed in
    by a caller drawing nonces in bulk, would make a key that never unwraps, so it is refused."""
    master = MasterKeys.parse(MasterKeys.generate("m1"))
    key, aad = b"k" * 32, b"aad"
    version, wrapped = master.wrap(key, aad, nonce=b"n" * NONCE_BYTES)
    assert master.unwrap(version, wrapped, aad, what="a key") == key
    for wrong in (b"", b"n" * (NONCE_BYTES - 1), b"n" * (NONCE_BYTES + 1)):
        with pytest.raises(ValueError, match="wrapping nonce"):
            master.wrap(key, aad, nonce=wrong)
    assert master.wrap(key, aad)[1] != master.wrap(key, aad)[1]  # drawn afresh when none is given


def test_every_located_value_is_a_whole_slot_whichever_container_holds_it() -> None:
    """Located values are built as tuples without NamedTuple's checks (``fieldcrypt._new_slot``): each must still
    be a ``_Slot`` of every field, in objects, arrays and maps alike, sealing and opening."""
    width = len(fieldcrypt._Slot._fields)
    crime = samples.crime_recorded("WM/2026/000001")
    for model, document in (
        (type(crime), crime.model_dump(mode="json")),
        (dict[str, list[type(crime)]], {"a": [crime.model_dump(mode="json")]}),  # type: ignore[misc]
    ):
        cipher = fieldcrypt.cipher_for(model)
        pending = cipher.prepare_encrypt(document, "case")
        assert pending.slots
        assert all(type(s) is fieldcrypt._Slot and len(s) == width for s in pending.slots)
        for slot in pending.slots:  # as sealed (a token of a key destroyed before it was written)
            slot.container[slot.index] = f"{fieldcrypt.TOKEN_PREFIX}{uuid.uuid4()}:"
        opened = cipher.prepare_decrypt(pending.document)
        assert len(opened.slots) == len(pending.slots)
        assert all(type(s) is fieldcrypt._Slot and len(s) == width and s.path for s in opened.slots)
