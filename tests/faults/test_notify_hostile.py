"""The notify service, black-box, with hostile records on every topic it follows (tombstones, bad bytes, huge
values, versions it does not know) and hostile commands (a withdrawal for someone not on the case, quiet hours of
"25:00-99:00", a facilitator's email carrying a CRLF header injection, a venue address of 10 KB) among good cases:
every good case's message arrives once at a real SMTP server; what cannot be read is a dead letter with a reason,
what cannot be done is a rejected command with a reason; notify keeps running (its /health)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from demo import samples
from demo.samples import STAFF, case_of, command, consent
from schemas import topics
from schemas.notify import MessageFormat, MessageLanguage, SetNotifyPreferences
from schemas.scheduling import RegisterFacilitator, RegisterVenue, VenueKind
from services.runtime.devstack import free_port
from services.runtime.kafka import publish_raw
from tests.harness import System
from tests.support.smtp import ALWAYS_OPEN, Inbox, smtp_server

pytestmark = pytest.mark.integration

FOLLOWED = (topics.REFERRAL, topics.CONSENT, topics.SCHEDULING, topics.COMMANDS, topics.PRIVACY, topics.API)
GOOD = 4


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    handler = Inbox()
    with smtp_server(handler) as port:
        yield handler, port


def event(event_type: str, subject: str, data: Any, dataschema: str | None = None) -> bytes:
    document = {
        "specversion": "1.0", "id": str(uuid.uuid4()), "source": "urn:hostile", "type": event_type,
        "subject": subject, "time": "2026-03-04T10:00:00Z", "data": data,
    }  # fmt: skip
    if dataschema:
        document["dataschema"] = dataschema
    return json.dumps(document).encode()


def hostile_records(subject: str) -> list[tuple[str, bytes | None, bytes | None, int | None]]:
    """Per followed topic: a tombstone, bad bytes, a huge value, a version older and one newer than any known."""
    key = subject.encode()
    out: list[tuple[str, bytes | None, bytes | None, int | None]] = []
    for topic in FOLLOWED:
        out += [
            (topic, key, None, None),
            (topic, key, b"\xff\xfe not json {", None),
            (topic, key, event("rj.case.opened", subject, {"x": "y" * 400_000}), None),
            (topic, key, event("rj.case.opened", subject, {}, dataschema="urn:rj:schema:rj.case.opened:v0"), None),
        ]
    return out


def crimes(refs: list[str]) -> list[tuple[str, str, bytes]]:
    return [m for r in refs for m in samples.on_crime_events(samples.crime_recorded(r), samples.outcome_recorded(r))]


def command_id(message: tuple[str, str, bytes]) -> str:
    return str(json.loads(message[2])["id"])


async def rejected(system: System, service: str, ids: set[str]) -> dict[str, str]:
    rows = await system.fetch(
        f"""SELECT convert_from(value, 'UTF8')::jsonb AS fact FROM {service}.outbox
             WHERE convert_from(value, 'UTF8')::jsonb->>'type' = 'rj.command.rejected'"""
    )
    facts = [json.loads(r["fact"]) if isinstance(r["fact"], str) else r["fact"] for r in rows]
    return {f["data"]["command_id"]: f["data"]["reason"] for f in facts if f["data"].get("command_id") in ids}


async def test_hostile_records_and_commands_leave_notify_running_and_good_cases_told_once(
    system: System, inbox: tuple[Inbox, int]
) -> None:
    handler, port = inbox
    ops = free_port()
    for name in ("referral", "consent", "scheduling"):
        system.start(name)
    system.start(
        "notify", ops_port=ops, notify_smtp_host="127.0.0.1", notify_smtp_port=port, notify_smtp_tls="none",
        notify_from_address="rj-hub@hub.example", notify_quiet_hours=ALWAYS_OPEN, notify_poll_interval_s=0.2,
    )  # fmt: skip
    good = [f"WM/2026/73000{i}" for i in range(GOOD)]
    victim_case = case_of(good[0])

    injection = command(
        RegisterFacilitator.model_construct(
            actor=STAFF, facilitator_id="F-EVIL", specialist=False, working_hours=samples.ALL_DAY,
            email="f-evil@hub.example\r\nBcc: everyone@evil.example", display_name="Evil",
        ),
        "F-EVIL",
    )  # fmt: skip
    long_venue = command(
        RegisterVenue.model_construct(
            actor=STAFF, venue_id="V-LONG", kind=VenueKind.community, name="Long", address="x" * 10_240, arrival=None,
            visit_slots=[],
        ),
        "V-LONG",
    )  # fmt: skip
    quiet = command(
        SetNotifyPreferences.model_construct(
            case_id=victim_case, actor=STAFF, person_id=f"V-{good[0]}", quiet_hours="25:00-99:00",
            language=MessageLanguage.en, format=MessageFormat.standard,
        )
    )  # fmt: skip
    stranger = consent(victim_case, "P-NOBODY", withdraw=True)

    await system.publish(
        [
            m
            for ref in good[:2]
            for m in samples.on_crime_events(samples.crime_recorded(ref), samples.outcome_recorded(ref))
        ]
    )
    await publish_raw(system.settings, hostile_records(victim_case))  # type: ignore[arg-type]
    await system.publish([injection, long_venue, quiet, stranger])
    await system.publish(
        [
            m
            for ref in good[2:]
            for m in samples.on_crime_events(samples.crime_recorded(ref), samples.outcome_recorded(ref))
        ]
    )

    addresses = [f"v-{ref.lower()}@example.org" for ref in good]

    async def every_victim_told() -> bool:
        return all(handler.to(a) for a in addresses)

    try:
        await system.wait_for(every_victim_told, timeout_s=90, what="every good case's victim told")
    except AssertionError:
        sends = await system.fetch("SELECT case_id, kind, status FROM notify.scheduled_sends ORDER BY case_id")
        cases = await system.fetch("SELECT key FROM notify.cases")
        missing = [a for a in addresses if not handler.to(a)]
        parked = await system.fetch("SELECT source_topic, reason FROM notify.parked WHERE case_key = $1", victim_case)
        dead = await system.fetch(
            "SELECT source_topic, reason FROM notify.dead_letters WHERE key = $1", victim_case.encode()
        )
        raise AssertionError(f"no email to {missing}; notify's cases {[r['key'] for r in cases]}, sends "
                             f"{[tuple(r) for r in sends]}; of {victim_case} parked {[tuple(r) for r in parked]}, "
                             f"dead {[tuple(r) for r in dead]}") from None  # fmt: skip

    async def dead_on_every_topic() -> bool:
        rows = await system.fetch("SELECT DISTINCT source_topic FROM notify.dead_letters")
        return {r["source_topic"] for r in rows} >= set(FOLLOWED)

    await system.wait_for(dead_on_every_topic, timeout_s=60, what="notify to dead-letter the bad bytes on each topic")
    reasons = await system.fetch("SELECT source_topic, reason FROM notify.dead_letters")
    assert all(r["reason"] for r in reasons)

    ids = {command_id(c) for c in (injection, long_venue, quiet, stranger)}

    async def all_answered() -> bool:
        found = {**await rejected(system, "scheduling", ids), **await rejected(system, "notify", ids),
                 **await rejected(system, "consent", ids)}  # fmt: skip
        return set(found) == ids and all(found.values())

    await system.wait_for(all_answered, timeout_s=60, what="every hostile command rejected with a reason")

    for address in addresses:  # once each, whatever came between
        kinds = [m["Subject"] for m in handler.to(address)]
        assert len(kinds) == len(set(kinds)) >= 1, f"{address}: {kinds}"
    for message in handler.received:  # no header was injected into anything sent
        assert message["Bcc"] is None
        assert all("evil.example" not in a.addr_spec for a in message["To"].addresses)
    async with httpx.AsyncClient(timeout=5) as client:
        assert (await client.get(f"http://127.0.0.1:{ops}/health/live")).status_code == 200
        assert (await client.get(f"http://127.0.0.1:{ops}/health/ready")).status_code == 200
    assert system.service("notify").running
