"""Helpers to drive a case the way facilitator UIs do: commands on ``rj.commands``, facts read back."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

from schemas import topics
from schemas.common import Actor
from schemas.consent import GiveConsent, RecordedThrough, RecordingMethod, WithdrawConsent
from schemas.envelope import EventData, new_event
from schemas.scheduling import RegisterFacilitator, RegisterVenue, VenueKind, VisitSlot, WeeklyHours
from services import samples
from services.referral.domain import case_id_for
from tests.harness import System, of_type

UI = "urn:rj:facilitator-ui"
STAFF = Actor(kind="staff", id="coordinator-1")
ALL_DAY = [WeeklyHours(weekday=d, start=time(0, 0), end=time(23, 59)) for d in range(7)]


def command(data: EventData, subject: str | None = None) -> tuple[str, str, bytes]:
    subject = subject or data.case_id  # type: ignore[attr-defined]
    return (topics.COMMANDS, subject, new_event(data, source=UI, subject=subject).to_json())


def next_week(hour: int = 10, days: int = 7) -> datetime:
    day = (datetime.now(UTC) + timedelta(days=days)).date()
    return datetime.combine(day, time(hour, 0), tzinfo=UTC)


def facilitators(*ids: str, specialist: bool = False) -> list[tuple[str, str, bytes]]:
    return [
        command(RegisterFacilitator(actor=STAFF, facilitator_id=f, specialist=specialist, working_hours=ALL_DAY), f)
        for f in ids
    ]


def community_venue(venue_id: str = "V-HUB") -> tuple[str, str, bytes]:
    return command(
        RegisterVenue(actor=STAFF, venue_id=venue_id, kind=VenueKind.community, name="Worcester hub"), venue_id
    )


def prison(venue_id: str, on: datetime) -> tuple[str, str, bytes]:
    slot = VisitSlot(name="afternoon", weekday=on.weekday(), start=time(13, 0), end=time(16, 0))
    return command(
        RegisterVenue(actor=STAFF, venue_id=venue_id, kind=VenueKind.prison, name="HMP Hewell", visit_slots=[slot]),
        venue_id,
    )


def consent(case_id: str, person_id: str, *, withdraw: bool = False) -> tuple[str, str, bytes]:
    model = WithdrawConsent if withdraw else GiveConsent
    return command(
        model(
            case_id=case_id,
            actor=STAFF,
            person_id=person_id,
            through=RecordedThrough.facilitator,
            method=RecordingMethod.in_person,
        )
    )


async def referred_case(system: System, ref: str, **outcome: Any) -> tuple[str, str, str]:
    """Publish a crime and an admitted outcome; return (case id, victim id, offender id) once the
    consent service has taken the case into preparation (as a UI waits to show it)."""
    await system.publish(samples.on_crime_events(samples.crime_recorded(ref), samples.outcome_recorded(ref, **outcome)))
    case_id = case_id_for(ref)
    await facts(system, topics.CONSENT, case_id, "rj.preparation.started")
    return case_id, f"V-{ref}", f"O-{ref}"


async def schedulable(system: System, case_id: str) -> None:
    """Wait until the scheduling service has heard the case is ready (a UI reads this from its view)."""

    async def ready() -> bool:
        state = await system.fetchval("SELECT state->>'ready' FROM scheduling.cases WHERE key = $1", case_id)
        return state == "true"

    await system.wait_for(ready, what=f"scheduling to hear case {case_id} is ready")


async def facts(
    system: System, topic: str, case_id: str, event_type: str, n: int = 1, **kw: Any
) -> list[dict[str, Any]]:
    """The facts of ``event_type`` about ``case_id`` on ``topic``, once there are ``n`` of them."""

    def about(ms: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [m for m in of_type(ms, event_type) if m["subject"] == case_id]

    return about(await system.read_until(topic, lambda ms: len(about(ms)) >= n, **kw))


async def rejection(system: System, case_id: str, topic: str, n: int = 1) -> list[str]:
    return [m["data"]["reason"] for m in await facts(system, topic, case_id, "rj.command.rejected", n)]
