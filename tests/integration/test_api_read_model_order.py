"""The read model against the real PostgreSQL and key store: facts of one case fed in the order decided, and
reversed (consent before the case was opened, a cancellation before its booking, ...), give the same case; nothing
crashes on a fact about a case the API has not heard of; personal data is sealed at rest and opens only when asked;
erasing a person leaves the case readable with their fields erased."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from pydantic import SecretStr

from schemas.commands import CommandRejected
from schemas.common import Actor, Channel, Contact
from schemas.consent import (
    CaseHeld,
    CaseNoteAdded,
    CaseReadyForMeeting,
    ConsentGiven,
    ConsentWithdrawn,
    FacilitatorAssigned,
    PreparationStarted,
    RecordedThrough,
    RecordingMethod,
)
from schemas.envelope import CloudEvent, EventData, new_event
from schemas.referral import (
    CaseAccepted,
    CaseOpened,
    CaseParticipant,
    Participant,
    ReferralRoute,
    Role,
    VictimInformationDue,
    VictimInformationProvided,
)
from schemas.scheduling import (
    AgreementItemTerms,
    AgreementRecorded,
    CancellationReason,
    CaseClosed,
    ClosureReason,
    ItemKind,
    MeetingBooked,
    MeetingCancelled,
    MeetingKind,
)
from schemas.upstream import Offence
from services.api import queries, readmodel
from services.runtime import privacy
from services.runtime.db import create_pool, migrate, transaction
from services.runtime.devstack import create_database, drop_database
from services.runtime.keystore import MasterKeys, ensure_schema
from services.runtime.privacy import Privacy, batch_scope
from services.runtime.settings import Settings

pytestmark = pytest.mark.integration

FORCE = "urn:police:west-mercia:rms"
T0 = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)
STAFF = Actor(kind="staff", id="coord-1")
SETTINGS = Settings(master_keys=SecretStr(MasterKeys.generate("t1")))


@pytest.fixture
async def pool(pg_server: str) -> AsyncIterator[asyncpg.Pool]:
    name = f"rj_test_{uuid.uuid4().hex[:10]}"
    url = await create_database(pg_server, name)
    pool = await create_pool(Settings(database_url=url, db_pool_size=2))
    async with pool.acquire() as conn:
        await migrate(conn, "api", "services.api.migrations")
        await ensure_schema(conn)
    keys = Privacy.from_settings(SETTINGS)
    before = privacy.installed()
    privacy.install(keys)
    yield pool
    privacy.install(before)
    await pool.close()
    await drop_database(pg_server, name)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def case_facts(case_id: str) -> list[CloudEvent[Any]]:
    """One case's facts in the order they were decided, each topic's with its own envelope time."""
    victim = Participant(
        person_id="V-1", role=Role.victim, required=True, name="Vera Victim", date_of_birth=date(1980, 5, 1),
        contact=Contact(email="vera@example.org", phone="+447700900001", address="1 High Street"),
        preferred_channel=Channel.email,
    )  # fmt: skip
    offender = Participant(person_id="O-1", role=Role.offender, required=True, name="Oscar Offender")
    parts = [CaseParticipant(person_id="V-1", role=Role.victim, required=True),
             CaseParticipant(person_id="O-1", role=Role.offender, required=True)]  # fmt: skip
    given = dict(through=RecordedThrough.facilitator, method=RecordingMethod.in_person, given_by=STAFF)
    facts: list[tuple[int, EventData]] = [
        (0, CaseOpened(
            case_id=case_id, crime_reference="WM/1", force=FORCE,
            offence=Offence(code="105/1", category="violence_against_the_person", description="Common assault"),
            participants=[victim, offender], routes=[ReferralRoute(route="admitted_outcome")], opened_at=at(0),
            opened_by=STAFF,
        )),
        (1, VictimInformationDue(
            case_id=case_id, crime_reference="WM/1", person_id="V-1", reported_at=at(0), due_by=at(60 * 24 * 7),
            due_date=date(2030, 1, 14), working_days=5, enhanced_rights=False,
        )),
        (2, CaseAccepted(
            case_id=case_id, crime_reference="WM/1", force=FORCE, specialist_required=False,
            risk_assessment_required=False, sensitivity_reasons=[], participants=parts, decided_at=at(2),
            decided_by=STAFF, reason="eligible",
        )),
        (3, PreparationStarted(
            case_id=case_id, participants=parts, specialist_required=False, risk_assessment_required=False,
            started_at=at(3),
        )),
        (4, FacilitatorAssigned(
            case_id=case_id, facilitator_id="F-ANN", specialist=False, assigned_at=at(4), assigned_by=STAFF,
        )),
        (5, VictimInformationProvided(
            case_id=case_id, crime_reference="WM/1", person_id="V-1", provided_at=at(5), provided_by=STAFF,
            on_time=True,
        )),
        (6, ConsentGiven(case_id=case_id, person_id="V-1", purpose="participation", given_at=at(6),
                         recorded_at=at(6), **given)),  # type: ignore[arg-type]
        (7, ConsentGiven(case_id=case_id, person_id="O-1", purpose="participation", given_at=at(7),
                         recorded_at=at(7), **given)),  # type: ignore[arg-type]
        (8, CaseReadyForMeeting(
            case_id=case_id, participants=parts, specialist_required=False, facilitator_ids=["F-ANN"],
            ready_at=at(8), decided_by=STAFF,
        )),
        (9, CaseNoteAdded(
            case_id=case_id, note_id="N-1", person_id="V-1", text="Prefers mornings", added_at=at(9),
            added_by=STAFF,
        )),
        (10, MeetingBooked(
            case_id=case_id, meeting_id="M1", kind=MeetingKind.conference, starts_at=at(60 * 24),
            ends_at=at(60 * 25), lead_facilitator_id="F-ANN", facilitator_ids=["F-ANN", "F-BEN"], venue_id="V-HUB",
            attendee_ids=["V-1", "O-1"], booked_at=at(10), booked_by=STAFF,
        )),
        (11, AgreementRecorded(
            case_id=case_id, meeting_id="M1", consented_by=["V-1", "O-1"], recorded_at=at(11), recorded_by=STAFF,
            items=[AgreementItemTerms(item_id="I1", kind=ItemKind.apology, description="A letter to Vera",
                                      owner_id="O-1", due_date=date(2030, 2, 1))],
        )),
        (12, CaseHeld(
            case_id=case_id, concern="Threat reported by Vera", raised_by="PC Smith", held_at=at(12),
            held_by=STAFF,
        )),
        (13, MeetingCancelled(
            case_id=case_id, meeting_id="M1", reason_code=CancellationReason.case_paused, cancelled_at=at(13),
            cancelled_by=STAFF,
        )),
        (14, ConsentWithdrawn(
            case_id=case_id, person_id="O-1", purpose="participation", through=RecordedThrough.participant,
            method=RecordingMethod.online, withdrawn_at=at(14), withdrawn_by=Actor(kind="participant", id="O-1"),
            recorded_at=at(14), reason="Not ready to face her", command_id="cmd-withdraw",
        )),
    ]  # fmt: skip
    return [
        new_event(data, source="urn:test", subject=case_id, time=at(minute), force=FORCE, event_id=f"{case_id}-{i}")
        for i, (minute, data) in enumerate(facts)
    ]


async def feed(pool: asyncpg.Pool, events: Sequence[CloudEvent[Any]], *, one_at_a_time: bool) -> None:
    batches = [[e] for e in events] if one_at_a_time else [list(events)]
    for batch in batches:
        with batch_scope():
            async with transaction(pool) as conn:
                assert await readmodel.take_in(conn, batch) == []


async def detail(pool: asyncpg.Pool, case_id: str, *, personal: bool) -> Any:
    async with pool.acquire() as conn:
        return await queries.case_detail(conn, case_id, personal=personal)


def comparable(view: Any) -> dict[str, Any]:
    """A case view without what names the case itself (the two runs use two case ids)."""
    text = view.model_dump_json().replace(view.case_id, "CASE")
    return json.loads(text)  # type: ignore[no-any-return]


async def test_facts_taken_in_reversed_order_make_the_same_case_as_in_order(pool: asyncpg.Pool) -> None:
    in_order, reversed_ = f"case-{uuid.uuid4().hex[:8]}", f"case-{uuid.uuid4().hex[:8]}"
    await feed(pool, case_facts(in_order), one_at_a_time=False)
    await feed(pool, list(reversed(case_facts(reversed_))), one_at_a_time=True)

    ordered = await detail(pool, in_order, personal=True)
    backwards = await detail(pool, reversed_, personal=True)
    assert ordered is not None and backwards is not None
    assert comparable(backwards) == comparable(ordered)

    assert ordered.status == "ready"  # withdrawn is CaseWithdrawn's to say; the consent fact alone does not close it
    assert ordered.hold.on_hold and ordered.hold.concern == "Threat reported by Vera"
    assert [(m.meeting_id, m.status, m.venue_id) for m in ordered.meetings] == [("M1", "cancelled", "V-HUB")]
    assert ordered.facilitator_ids == ["F-ANN"]
    offender, victim = ordered.participants  # by person id
    assert (victim.person_id, victim.name, victim.contact.email) == ("V-1", "Vera Victim", "vera@example.org")
    assert [(c.purpose, c.decision) for c in offender.consent] == [("participation", "withdrawn")]
    withdrawal = ordered.consents[-1]
    assert (withdrawal.person_id, withdrawal.reason) == ("O-1", "Not ready to face her")
    assert [(d.kind, d.state) for d in ordered.deadlines] == [("victim_information", "met"), ("agreement_item", "due")]
    assert ordered.notes[0].text == "Prefers mornings"
    assert ordered.agreement_items[0].description == "A letter to Vera"
    assert len(ordered.timeline) == 15
    assert "participants[V-1].name" in ordered.personal_fields
    assert "consents[" + ordered.consents[-1].event_id + "].person_id" in ordered.personal_fields


async def test_a_fact_about_a_case_never_opened_makes_the_case_and_waits_for_the_rest(pool: asyncpg.Pool) -> None:
    case_id = f"case-{uuid.uuid4().hex[:8]}"
    events = case_facts(case_id)
    consent_first = [e for e in events if e.type == "rj.consent.given"][:1]
    await feed(pool, consent_first, one_at_a_time=True)
    early = await detail(pool, case_id, personal=True)
    assert early is not None and early.status is None and early.crime_reference is None
    assert early.consents[0].person_id == "V-1"

    await feed(pool, [e for e in events if e.type == "rj.case.opened"], one_at_a_time=True)
    later = await detail(pool, case_id, personal=True)
    assert later.status == "referred" and later.crime_reference == "WM/1"
    victim = next(p for p in later.participants if p.person_id == "V-1")
    assert victim.name == "Vera Victim" and [c.decision for c in victim.consent] == ["given"]


async def test_a_rejection_answers_its_command_without_making_a_case(pool: asyncpg.Pool) -> None:
    unknown = f"case-{uuid.uuid4().hex[:8]}"
    rejected = CommandRejected(
        case_id=unknown, command_id="cmd-1", command_type="rj.case.close", service="scheduling",
        reason="no such case", rejected_at=T0,
    )  # fmt: skip
    await feed(pool, [new_event(rejected, source="urn:test", subject=unknown, time=T0)], one_at_a_time=True)
    async with pool.acquire() as conn:
        assert await queries.case_access(conn, unknown) is None
        assert await queries.case_detail(conn, unknown, personal=False) is None
        [answer] = await queries.command_answers(conn, "cmd-1")
    assert (answer.status, answer.reason, answer.case_id) == ("rejected", "no such case", unknown)


async def test_personal_data_is_sealed_at_rest_and_hidden_unless_asked_for(pool: asyncpg.Pool) -> None:
    case_id = f"case-{uuid.uuid4().hex[:8]}"
    await feed(pool, case_facts(case_id), one_at_a_time=False)
    async with pool.acquire() as conn:
        dump = await conn.fetchval(
            """SELECT string_agg(t::text, ' ') FROM (
                   SELECT p::text AS t FROM api.participants p UNION ALL SELECT c::text FROM api.consents c
                   UNION ALL SELECT n::text FROM api.notes n UNION ALL SELECT l::text FROM api.timeline l
                   UNION ALL SELECT a::text FROM api.agreement_items a UNION ALL SELECT k::text FROM api.cases k) x"""
        )
    for secret in ("Vera Victim", "vera@example.org", "High Street", "Prefers mornings", "Not ready to face her",
                   "Threat reported", "A letter to Vera"):  # fmt: skip
        assert secret not in dump

    hidden = await detail(pool, case_id, personal=False)
    assert hidden.personal_hidden and hidden.personal_fields == []
    assert all(p.name is None and p.contact is None and p.consent is None for p in hidden.participants)
    assert hidden.consents[-1].person_id is None  # who withdrew is personal data
    assert hidden.notes[0].text is None and hidden.hold.concern is None
    assert "Vera" not in hidden.model_dump_json()


async def test_an_erased_person_reads_as_none_and_listed_while_the_case_still_reads(pool: asyncpg.Pool) -> None:
    case_id = f"case-{uuid.uuid4().hex[:8]}"
    await feed(pool, case_facts(case_id), one_at_a_time=False)
    keys = Privacy.from_settings(SETTINGS).store
    assert keys is not None
    async with pool.acquire() as conn:
        await keys.destroy(conn, "V-1", case_id, by="staff:coord-1", reason="subject erasure request")

    view = await detail(pool, case_id, personal=True)
    offender, victim = view.participants
    assert (victim.person_id, victim.role, victim.name, victim.contact) == ("V-1", "victim", None, None)
    assert "participants[V-1].name" in view.erased_fields
    assert "participants[V-1].name" not in view.personal_fields
    assert offender.name == "Oscar Offender"
    assert view.notes[0].text is None  # about her, under her key
    assert view.status == "ready" and len(view.timeline) == 15


async def test_a_staff_closure_answers_the_close_command_an_earlier_fact_of_its_batch_left_unanswered(
    pool: asyncpg.Pool,
) -> None:
    """The batch's answers are written together, yet a staff closure (which answers the earliest of that member of
    staff's close commands that no answer names) sees the answers of the facts before it in the same batch."""
    case_id = f"case-{uuid.uuid4().hex[:8]}"
    async with pool.acquire() as conn:
        for command_id, minute in (("close-1", 0), ("close-2", 1)):
            await conn.execute(
                """INSERT INTO api.commands_sent (command_id, case_id, command_type, staff_id, sent_at)
                   VALUES ($1, $2, 'rj.case.close', $3, $4)""",
                command_id, case_id, STAFF.id, at(minute),
            )  # fmt: skip
    refused = CommandRejected(
        case_id=case_id, command_id="close-1", command_type="rj.case.close", service="scheduling",
        reason="the case is on hold", rejected_at=at(2),
    )  # fmt: skip
    closed = CaseClosed(case_id=case_id, reason=ClosureReason.not_suitable, closed_at=at(3), closed_by=STAFF)
    await feed(
        pool,
        [new_event(refused, source="urn:test", subject=case_id, time=at(2)),
         new_event(closed, source="urn:test", subject=case_id, time=at(3))],
        one_at_a_time=False,
    )  # fmt: skip
    async with pool.acquire() as conn:
        first = await queries.command_answers(conn, "close-1")
        second = await queries.command_answers(conn, "close-2")
    assert [(a.status, a.event_type) for a in first] == [("rejected", "rj.command.rejected")]
    assert [(a.status, a.event_type) for a in second] == [("accepted", "rj.case.closed")]
