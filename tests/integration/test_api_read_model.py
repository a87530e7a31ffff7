"""The API's read model through the real broker and PostgreSQL: upstream crimes and staff commands go in as they do
in production, and the api service's view of the case follows (participants, consent, a booked meeting, the
timeline), opens personal data only when asked, answers each command by its id, survives an erasure, and lists a
force's cases by filter, a page at a time."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from schemas import topics
from schemas.common import Actor
from schemas.consent import GiveConsent, RecordedThrough, RecordingMethod
from schemas.privacy import ErasePerson
from schemas.scheduling import BookMeeting, MeetingKind
from services.api import queries, views
from services.runtime import privacy
from services.runtime.privacy import Privacy
from tests.e2e.conftest import (
    STAFF,
    command,
    community_venue,
    facilitators,
    facilitators_known,
    facts,
    next_week,
    prepare,
    referred_case,
    schedulable,
)
from tests.harness import System

pytestmark = pytest.mark.integration

FORCE = "urn:police:west-mercia:rms"  # the samples' force


@pytest.fixture
async def read(system: System) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """Run a query against the system's database, with its privacy keys installed as the api process has them."""
    before = privacy.installed()
    privacy.install(Privacy.from_settings(system.settings))

    async def run(query: Callable[..., Awaitable[Any]], *args: Any, **kw: Any) -> Any:
        conn = await asyncpg.connect(system.settings.database_url)
        try:
            async with conn.transaction():
                return await query(conn, *args, **kw)
        finally:
            await conn.close()

    yield run
    privacy.install(before)


async def eventually(system: System, check: Callable[[], Awaitable[bool]], what: str) -> None:
    await system.wait_for(check, what=what, timeout_s=60)


def command_id(message: tuple[str, str, bytes]) -> str:
    return str(json.loads(message[2])["id"])


async def test_the_read_model_follows_a_case_from_referral_to_a_booked_meeting_and_through_an_erasure(
    system: System, read: Callable[..., Awaitable[Any]]
) -> None:
    for name in ("referral", "consent", "scheduling", "privacy", "api"):
        system.start(name)
    await system.publish([*facilitators("F-ANN", "F-BEN"), community_venue()])
    await facilitators_known(system, "F-ANN", "F-BEN")

    case_id, victim, offender = await referred_case(system, "WM/2026/700001")
    await system.publish(prepare(case_id, [victim, offender], ["F-ANN", "F-BEN"]))
    await facts(system, topics.CONSENT, case_id, "rj.case.ready-for-meeting")
    await schedulable(system, case_id)
    starts = next_week()
    booking = command(
        BookMeeting(
            case_id=case_id, actor=STAFF, meeting_id="M1", kind=MeetingKind.conference, starts_at=starts,
            ends_at=starts + timedelta(hours=1), lead_facilitator_id="F-ANN", co_facilitator_id="F-BEN",
            venue_id="V-HUB",
        )
    )  # fmt: skip
    stranger = command(
        GiveConsent(
            case_id=case_id, actor=STAFF, person_id="NOBODY", through=RecordedThrough.facilitator,
            method=RecordingMethod.in_person,
        )
    )  # fmt: skip
    await system.publish([booking, stranger])

    async def booked() -> bool:
        # Each topic is followed at its own pace: the booking (rj.scheduling) can be read before the case's
        # readiness (rj.consent); a client sees both once each topic has caught up.
        detail = await read(queries.case_detail, case_id, personal=False)
        return detail is not None and [m.status for m in detail.meetings] == ["booked"] and detail.status == "ready"

    await eventually(system, booked, "the read model to show the meeting booked and the case ready")

    seen: views.CaseDetail = await read(queries.case_detail, case_id, personal=True)
    assert seen.status == "ready" and seen.force == FORCE and seen.crime_reference == "WM/2026/700001"
    assert seen.facilitator_ids == ["F-ANN", "F-BEN"]
    people = {p.person_id: p for p in seen.participants}
    assert people[victim].role == "victim" and people[offender].role == "offender"
    assert people[victim].name == f"Victim {victim}" and people[victim].contact is not None
    assert [(c.purpose, c.decision) for c in people[victim].consent or []] == [("participation", "given")]
    assert seen.meetings[0].venue_id == "V-HUB" and sorted(seen.meetings[0].attendee_ids) == sorted(people)
    types = [entry.event_type for entry in seen.timeline]
    for expected in ("rj.case.opened", "rj.case.accepted", "rj.consent.given", "rj.case.ready-for-meeting",
                     "rj.meeting.booked"):  # fmt: skip
        assert expected in types
    assert f"participants[{victim}].name" in seen.personal_fields and not seen.personal_hidden
    assert any(d.kind == "victim_information" for d in seen.deadlines)

    hidden: views.CaseDetail = await read(queries.case_detail, case_id, personal=False)
    assert hidden.personal_hidden and hidden.personal_fields == []
    assert all(p.name is None and p.contact is None for p in hidden.participants)
    assert f"Victim {victim}" not in hidden.model_dump_json()

    access = await read(queries.case_access, case_id)
    assert access is not None and access.force == FORCE and access.facilitator_ids == {"F-ANN", "F-BEN"}

    async def answered() -> bool:
        return bool(await read(queries.command_answers, command_id(stranger)))

    await eventually(system, answered, "the stranger's consent to be answered")
    booking_answers = await read(queries.command_answers, command_id(booking))
    assert [(a.event_type, a.status) for a in booking_answers] == [("rj.meeting.booked", "accepted")]
    [refusal] = await read(queries.command_answers, command_id(stranger))
    assert refusal.status == "rejected" and "NOBODY" in (refusal.reason or "")

    dpo = Actor(kind="staff", id="dpo-1")
    await system.publish([command(ErasePerson(person_id=victim, case_id=case_id, reason="erasure request", actor=dpo))])

    async def erased() -> bool:
        detail = await read(queries.case_detail, case_id, personal=True)
        return any(p.erased for p in detail.participants if p.person_id == victim)

    await eventually(system, erased, "the read model to hear of the erasure")
    after: views.CaseDetail = await read(queries.case_detail, case_id, personal=True)
    gone = next(p for p in after.participants if p.person_id == victim)
    assert (gone.name, gone.contact, gone.date_of_birth) == (None, None, None)
    assert f"participants[{victim}].name" in after.erased_fields
    assert f"participants[{victim}].name" not in after.personal_fields
    assert next(p for p in after.participants if p.person_id == offender).name == "Offender WM/2026/700001"
    assert after.status == "ready" and len(after.timeline) >= len(seen.timeline)


async def test_a_forces_cases_list_by_filter_a_page_at_a_time_without_personal_data(
    system: System, read: Callable[..., Awaitable[Any]]
) -> None:
    for name in ("referral", "consent", "scheduling", "api"):
        system.start(name)
    await system.publish(facilitators("F-ANN"))
    await facilitators_known(system, "F-ANN")
    first, _, _ = await referred_case(system, "WM/2026/700011")
    second, victim, offender = await referred_case(system, "WM/2026/700012")
    third, _, _ = await referred_case(system, "WM/2026/700013")
    await system.publish(prepare(second, [victim, offender], ["F-ANN"]))

    async def all_there() -> bool:
        page = await read(queries.list_cases, force=FORCE, limit=10)
        ready = await read(queries.list_cases, force=FORCE, status="ready")
        return len(page.cases) == 3 and len(ready.cases) == 1

    await eventually(system, all_there, "the three cases, one of them ready")

    seen: list[str] = []
    cursor = None
    while True:
        page = await read(queries.list_cases, force=FORCE, limit=2, after=cursor)
        seen += [c.case_id for c in page.cases]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert sorted(seen) == sorted([first, second, third]) and len(seen) == 3

    mine = await read(queries.list_cases, force=FORCE, facilitator_id="F-ANN")
    assert [c.case_id for c in mine.cases] == [second] and mine.cases[0].facilitator_ids == ["F-ANN"]
    by_crime = await read(queries.list_cases, force=FORCE, crime_reference="WM/2026/700013")
    assert [c.case_id for c in by_crime.cases] == [third]
    other_force = await read(queries.list_cases, force="urn:police:elsewhere:rms")
    assert other_force.cases == []
    assert "Victim" not in (await read(queries.list_cases, force=FORCE)).model_dump_json()
    with pytest.raises(queries.BadCursor):
        await read(queries.list_cases, force=FORCE, after="not-a-cursor")
