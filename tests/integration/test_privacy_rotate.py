"""``rj privacy rotate`` as an operator runs it, against a real PostgreSQL database: every key is re-wrapped
under the new master key, data encrypted before still decrypts with only the new key listed, and a missing
or unlisted master key is refused with a clear message."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path

import asyncpg
import pytest

from schemas.common import Actor, Contact
from schemas.referral import CaseOpened, Participant, Role
from schemas.upstream import Offence
from services.runtime.devstack import database_for_run
from services.runtime.fieldcrypt import decrypt_batch, encrypt_batch, is_token
from services.runtime.keystore import KeyCache, KeyStore, MasterKeys, ensure_schema
from services.runtime.settings import Settings
from tests.harness import run_rj

pytestmark = pytest.mark.integration

V1 = MasterKeys.generate("v1")
V2 = MasterKeys.generate("v2")


@pytest.fixture
async def database(pg_server: str) -> AsyncIterator[str]:
    async with database_for_run(pg_server, prefix="rj_test_rotate") as url:
        yield url


def key_store(master_keys: str) -> KeyStore:
    return KeyStore.from_settings(Settings(master_keys=master_keys))


def opened_case(case_id: str) -> CaseOpened:
    victim = Participant(
        person_id="victim-1",
        role=Role.victim,
        required=True,
        name="Zoë O'Brien",
        date_of_birth=date(1990, 5, 17),
        contact=Contact(email="zoe@example.org", phone="07700 900123", address="1 High Street"),
    )
    return CaseOpened(
        case_id=case_id,
        crime_reference="WM/2026/000123",
        offence=Offence(code="TH01", category="theft"),
        participants=[
            victim,
            Participant(person_id="offender-1", role=Role.offender, required=True, name="A. N. Other"),
        ],
        routes=[],
        opened_at=datetime.now(UTC),
        opened_by=Actor(kind="system", id="referral"),
    )


async def versions(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        """SELECT master_key_version FROM keystore.data_keys WHERE wrapped_key IS NOT NULL
           UNION ALL SELECT master_key_version FROM keystore.bucket_keys WHERE wrapped_key IS NOT NULL"""
    )
    return [r[0] for r in rows]


async def test_rotate_rewraps_every_key_under_the_new_version_and_old_data_still_decrypts(database: str) -> None:
    case_id = f"case-{uuid.uuid4().hex[:8]}"
    document = opened_case(case_id).model_dump(mode="json")
    conn = await asyncpg.connect(database)
    try:
        await ensure_schema(conn)
        old = key_store(V1)
        (sealed,) = await encrypt_batch(conn, KeyCache(old), [(CaseOpened, document, case_id)])
        await old.bucket_key(conn, datetime.now(UTC))
        await old.destroy(conn, "someone-erased", case_id, by="test", reason="erased before the rotation")
        assert is_token(sealed["participants"][0]["name"])
        before = await versions(conn)
        assert len(before) >= 3 and set(before) == {"v1"}

        status, out, err = await run_rj(Settings(database_url=database, master_keys=f"{V2},{V1}"), "privacy", "rotate")

        assert status == 0, err
        assert f"Re-wrapped {len(before)} key(s) under master key version v2" in out
        assert "remove the older versions from MASTER_KEYS" in out
        assert await versions(conn) == ["v2"] * len(before)
        destroyed = await conn.fetchval(
            "SELECT wrapped_key IS NULL FROM keystore.data_keys WHERE person_id = 'someone-erased'"
        )
        assert destroyed  # a destroyed key stays destroyed
        (opened_again,) = await decrypt_batch(conn, KeyCache(key_store(V2)), [(CaseOpened, sealed)])
        assert opened_again.data == document and opened_again.erased == ()
    finally:
        await conn.close()


async def test_rotate_refuses_a_missing_or_unreadable_master_key_and_names_an_unlisted_version(database: str) -> None:
    status, out, err = await run_rj(Settings(database_url=database), "privacy", "rotate")
    assert status == 2
    assert err.strip() == "error: no master key configured: set MASTER_KEYS or MASTER_KEY_FILE"
    assert "Traceback" not in err + out

    status, out, err = await run_rj(
        Settings(database_url=database, master_key_file=Path("/nonexistent/keys")), "privacy", "rotate"
    )
    assert status == 2 and err.startswith("error: MASTER_KEY_FILE cannot be read") and "Traceback" not in err

    # A fresh database: the key store's schema is made, and there is nothing to re-wrap.
    status, out, err = await run_rj(Settings(database_url=database, master_keys=V2), "privacy", "rotate")
    assert status == 0, err
    assert out.startswith("Re-wrapped 0 key(s) under master key version v2")

    conn = await asyncpg.connect(database)
    try:
        await key_store(V1).data_keys_for(conn, [("p-1", "case-1")])
    finally:
        await conn.close()
    status, out, err = await run_rj(Settings(database_url=database, master_keys=V2), "privacy", "rotate")
    assert status == 2
    assert err.startswith("error: ") and "'v1', which MASTER_KEYS does not list" in err
    assert "Traceback" not in err + out

    status, out, err = await run_rj(
        Settings(database_url=database, master_keys=f"{V2},{V1}"), "privacy", "rotate", "--to", "v3"
    )
    assert status == 2 and "rotation target: wrapped under master key version 'v3'" in err
