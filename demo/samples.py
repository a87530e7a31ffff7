"""Builders of sample traffic for the demo, tests and benchmarks: upstream events as a police records
system publishes them, and commands as a facilitator UI sends them."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta

from schemas import topics
from schemas.common import Actor, Channel, Contact
from schemas.consent import GiveConsent, RecordedThrough, RecordingMethod, WithdrawConsent
from schemas.envelope import Event, EventData, new_event
from schemas.referral import case_id_for
from schemas.scheduling import RegisterFacilitator, RegisterVenue, VenueKind, VisitSlot, WeeklyHours
from schemas.upstream import (
    CrimeOutcomeRecorded,
    CrimeRecorded,
    Offence,
    Offender,
    Outcome,
    ReferralRequested,
    Requester,
    RiskFlag,
    Victim,
)

UPSTREAM_SOURCE = "urn:police:west-mercia:rms"


def case_of(crime_reference: str, force: str = UPSTREAM_SOURCE) -> str:
    """The case a sample crime becomes: the contract's rule, for the samples' force (``UPSTREAM_SOURCE``)."""
    return case_id_for(force, crime_reference)


def upstream_event(
    data: EventData, *, event_id: str | None = None, time: datetime | None = None, force: str = UPSTREAM_SOURCE
) -> bytes:
    """An upstream event as a force's crime system publishes it (its ``source`` names the force)."""
    crime_reference: str = data.crime_reference  # type: ignore[attr-defined]
    return Event(
        specversion="1.0",
        id=event_id or str(uuid.uuid4()),
        source=force,
        type=data.event_type,
        subject=crime_reference,
        time=time or datetime.now(UTC),
        data=data,
    ).to_json()


def victim(
    person_id: str, *, born: date = date(1988, 4, 2), enhanced: bool = False, vulnerable: bool = False
) -> Victim:
    return Victim(
        person_id=person_id,
        name=f"Victim {person_id}",
        date_of_birth=born,
        contact=Contact(email=f"{person_id.lower()}@example.org", phone="+447700900001", address="1 High Street"),
        preferred_channel=Channel.email,
        enhanced_rights=enhanced,
        vulnerable=vulnerable,
    )


def crime_recorded(
    ref: str,
    *,
    victims: list[Victim] | None = None,
    reported_at: datetime | None = None,
    category: str = "violence_against_the_person",
    description: str = "Common assault",
) -> CrimeRecorded:
    reported_at = reported_at or datetime.now(UTC)
    return CrimeRecorded(
        crime_reference=ref,
        offence=Offence(code="105/1", category=category, description=description),
        occurred_at=reported_at - timedelta(hours=12),
        reported_at=reported_at,
        victims=victims if victims is not None else [victim(f"V-{ref}")],
    )


def outcome_recorded(
    ref: str,
    *,
    admitted: bool | None = True,
    risk_flags: list[RiskFlag] | None = None,
    in_custody: bool = False,
    outcome: Outcome = Outcome.cautioned,
    offender: str | None = None,
) -> CrimeOutcomeRecorded:
    """An offender's outcome (``offender``: their id, by default the crime's one offender ``O-<ref>``)."""
    return CrimeOutcomeRecorded(
        crime_reference=ref,
        offender=Offender(
            person_id=offender or f"O-{ref}",
            name=f"Offender {offender or ref}",
            date_of_birth=date(1999, 1, 1),
            contact=Contact(phone="+447700900002"),
            in_custody=in_custody,
            custody_location="HMP Hewell" if in_custody else None,
        ),
        outcome=outcome,
        admitted_responsibility=admitted,
        risk_flags=risk_flags or [],
        recorded_at=datetime.now(UTC),
    )


def referral_requested(
    ref: str, *, by: Requester = Requester.victim, person_id: str | None = None
) -> ReferralRequested:
    return ReferralRequested(
        crime_reference=ref,
        requested_by=by,
        person_id=person_id,
        notes="Asked about meeting the person responsible",
        requested_at=datetime.now(UTC),
    )


def on_crime_events(*payloads: EventData, force: str = UPSTREAM_SOURCE) -> list[tuple[str, str, bytes]]:
    """(topic, key, value) triples for ``crime.events``, keyed by crime reference as upstream does."""
    return [
        (topics.CRIME_EVENTS, p.crime_reference, upstream_event(p, force=force))  # type: ignore[attr-defined]
        for p in payloads
    ]


# --- commands, as a facilitator UI sends them ---------------------------------------------------

UI = "urn:rj:facilitator-ui"
STAFF = Actor(kind="staff", id="coordinator-1")
ALL_DAY = [WeeklyHours(weekday=d, start=time(0, 0), end=time(23, 59, 59)) for d in range(7)]


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


def soon(seconds: float = 3.0) -> datetime:
    """A meeting start just ahead of now, so the meeting can be recorded as held moments later. Avoids
    straddling midnight (UK working hours are per day)."""
    start = datetime.now(UTC) + timedelta(seconds=seconds)
    if start.time() > time(23, 49):  # too close to the end of the day for a ten-minute meeting
        start = datetime.combine(start.date() + timedelta(days=1), time(0, 0, 5), tzinfo=UTC)
    return start


def prepare(case_id: str, people: list[str], facilitator_ids: list[str]) -> list[tuple[str, str, bytes]]:
    """What a facilitator does before a meeting: be assigned, meet each party, record their consent."""
    from schemas.consent import AssignFacilitator, RecordPreparationMeeting

    assigned = [command(AssignFacilitator(case_id=case_id, actor=STAFF, facilitator_id=f)) for f in facilitator_ids]
    met = [
        command(
            RecordPreparationMeeting(
                case_id=case_id, actor=STAFF, person_id=p, met_at=datetime.now(UTC), method=RecordingMethod.in_person
            )
        )
        for p in people
    ]
    return [*assigned, *met, *[consent(case_id, p) for p in people]]
