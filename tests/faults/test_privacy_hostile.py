"""Sealed personal data under attack, driven as an outside client would: forged, altered, moved, truncated
and oversized sealed values published on a topic a service follows. Each becomes a dead letter with its
reason (kept sealed), the stream moves on, and a value whose key was destroyed (erased) is applied with its
stand-in, never refused.
"""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pydantic_core
import pytest
from pydantic import BaseModel

from schemas import topics
from schemas.common import Actor
from schemas.consent import ConsentWithdrawn, RecordedThrough, RecordingMethod
from schemas.envelope import new_event
from schemas.upstream import ReferralRequested, Requester
from services.runtime.fieldcrypt import cipher_for
from services.runtime.keystore import CASE_PERSON, KeyCache, KeyStore, MasterKeys, ensure_schema
from tests.harness import System

pytestmark = pytest.mark.integration

STAFF = Actor(kind="staff", id="coordinator-1")


def withdrawal(case_id: str, person_id: str, reason: str) -> ConsentWithdrawn:
    now = datetime.now(UTC)
    return ConsentWithdrawn(
        case_id=case_id,
        person_id=person_id,
        purpose="participation",
        through=RecordedThrough.facilitator,
        method=RecordingMethod.phone,
        withdrawn_at=now,
        withdrawn_by=STAFF,
        recorded_at=now,
        reason=reason,
    )


class Forger:
    """Seals payloads with the deployment's own key store, as consent would, to tamper with afterwards."""

    def __init__(self, system: System, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.store = KeyStore(MasterKeys.from_settings(system.settings))

    async def sealed(self, fact: ConsentWithdrawn) -> dict[str, Any]:
        return await self.sealed_as(fact, fact.case_id)

    async def sealed_as(self, payload: BaseModel, case_id: str) -> dict[str, Any]:
        keys = KeyCache(self.store)
        pending = cipher_for(type(payload)).prepare_encrypt(payload.model_dump(mode="json"), case_id)
        await keys.load(self.conn, pairs=pending.owners)
        return pending.seal(keys)


def on_consent(fact: ConsentWithdrawn, data: dict[str, Any]) -> tuple[str, str, bytes]:
    event = new_event(fact, source="urn:rj:service:consent", subject=fact.case_id)
    return topics.CONSENT, fact.case_id, event.to_json(pydantic_core.to_json(data))


def flip(token: str) -> str:
    """The token with one byte of its ciphertext changed."""
    head, _, body = token.rpartition(":")
    raw = bytearray(base64.b64decode(body))
    raw[-1] ^= 0x01
    return f"{head}:{base64.b64encode(bytes(raw)).decode()}"


async def test_forged_or_altered_sealed_values_are_dead_lettered_with_reasons_and_erased_ones_applied(
    system: System,
) -> None:
    system.start("scheduling")
    conn = await asyncpg.connect(system.settings.database_url)
    try:
        await ensure_schema(conn)
        forger = Forger(system, conn)
        run = uuid.uuid4().hex[:8]
        names = ("good", "altered", "unknown", "moved", "bare", "huge", "erased", "badid", "lifted")
        cases = {name: f"case-{name}-{run}" for name in names}

        good = withdrawal(cases["good"], "V-1", "Secret reason one")
        altered = withdrawal(cases["altered"], "V-2", "Secret reason two")
        altered_data = await forger.sealed(altered)
        altered_data["reason"] = flip(altered_data["reason"])
        unknown = withdrawal(cases["unknown"], "V-3", "Secret reason three")
        unknown_data = await forger.sealed(unknown)
        unknown_data["reason"] = f"enc:v1:{uuid.uuid4()}:{unknown_data['reason'].rpartition(':')[2]}"
        moved = withdrawal(cases["moved"], "V-4", "Secret reason four")
        moved_data = await forger.sealed(moved)
        # the same person's notes on the same case, lifted into the reason: the field binds the token
        notes = ReferralRequested(
            crime_reference="X", requested_by=Requester.victim, person_id="V-4", notes="Lifted",
            requested_at=datetime.now(UTC),
        )  # fmt: skip
        moved_data["reason"] = (await forger.sealed_as(notes, cases["moved"]))["notes"]
        bare = withdrawal(cases["bare"], "V-5", "Secret reason five")
        bare_data = await forger.sealed(bare)
        bare_data["reason"] = "enc:v1:"
        huge = withdrawal(cases["huge"], "V-6", "Secret reason six")
        huge_data = await forger.sealed(huge)
        huge_data["reason"] = huge_data["reason"] + "A" * 600_000
        badid = withdrawal(cases["badid"], "V-8", "Secret reason eight")
        badid_data = await forger.sealed(badid)
        badid_data["reason"] = "enc:v1:not-a-uuid:AAAA"  # a key id the key store's uuid column refuses
        lifted = withdrawal(cases["lifted"], "V-9", "x")
        lifted_data = await forger.sealed(lifted)
        # another case's (another force's) victim's words, lifted whole into this case's event
        lifted_data["reason"] = (await forger.sealed(withdrawal(cases["good"], "V-1", "Secret reason nine")))["reason"]
        erased = withdrawal(cases["erased"], "V-7", "Secret reason seven")
        erased_data = await forger.sealed(erased)
        # Every sealed value on a withdrawal is under the case's key (its key id must not name who withdrew): the
        # case's erasure is what leaves it with stand-ins.
        await forger.store.destroy(conn, CASE_PERSON, cases["erased"], by="test", reason="case erased")

        await system.publish(
            [
                on_consent(altered, altered_data),
                on_consent(unknown, unknown_data),
                on_consent(moved, moved_data),
                on_consent(bare, bare_data),
                on_consent(huge, huge_data),
                on_consent(badid, badid_data),
                on_consent(lifted, lifted_data),
                on_consent(erased, erased_data),
                on_consent(good, await forger.sealed(good)),
            ]
        )

        async def settled() -> bool:
            letters = await conn.fetchval("SELECT count(*) FROM scheduling.dead_letters")
            return bool(letters >= 7 and await applied(cases["good"]) and await applied(cases["erased"]))

        async def applied(case_id: str) -> bool:
            state = await conn.fetchval("SELECT state::text FROM scheduling.cases WHERE key = $1", case_id)
            return state is not None

        await system.wait_for(settled, what="seven dead letters, and the good and the erased withdrawal applied")
        letters = {
            row["key"].decode(): row
            for row in await conn.fetch("SELECT key, reason, original FROM scheduling.dead_letters")
        }
        assert set(letters) == {cases[n] for n in ("altered", "unknown", "moved", "bare", "huge", "badid", "lifted")}
        assert "fails authentication" in letters[cases["altered"]]["reason"]
        assert "does not hold" in letters[cases["unknown"]]["reason"]
        assert "fails authentication" in letters[cases["moved"]]["reason"]
        assert "malformed encrypted value" in letters[cases["bare"]]["reason"]
        assert "malformed encrypted value" in letters[cases["badid"]]["reason"]
        assert "sealed for another case" in letters[cases["lifted"]]["reason"]
        for row in letters.values():
            assert row["reason"].startswith("sealed personal data cannot be opened"), row["reason"]
            assert b"Secret reason" not in row["original"] and b"enc:v1:" not in row["original"]  # sealed whole
        # The erased withdrawal was applied (with its reason's stand-in), as was the good one after them all.
        assert await applied(cases["erased"]) and await applied(cases["good"])
    finally:
        await conn.close()
