"""The notify service's part of the contract: its facts and command, and what it added to registrations."""

from __future__ import annotations

import json
from datetime import UTC, datetime, time

import pytest
from pydantic import ValidationError

from schemas import topics
from schemas.common import Actor, Channel
from schemas.envelope import new_event
from schemas.notify import (
    SYSTEM_NOTIFY,
    NotificationCancelled,
    NotificationKind,
    NotificationScheduled,
    RecipientKind,
    SetNotifyPreferences,
    parse_opening_hours,
)
from schemas.pii import pii_fields
from schemas.registry import COMMAND_OWNER, parse_event
from schemas.scheduling import (
    FacilitatorRegistered,
    RegisterFacilitator,
    RegisterVenue,
    VenueKind,
    VenueRegistered,
    WeeklyHours,
)

AT = datetime(2026, 3, 2, 9, tzinfo=UTC)
STAFF = Actor(kind="staff", id="F-ANN")
HOURS = [WeeklyHours(weekday=0, start=time(9), end=time(17))]


def roundtrip(data: object, subject: str) -> object:
    event = new_event(data, source="urn:rj:test", subject=subject)  # type: ignore[arg-type]
    return parse_event(event.to_json()).data


def test_a_facilitator_registered_before_email_and_display_name_existed_still_loads_without_them() -> None:
    fact = FacilitatorRegistered(
        facilitator_id="F-ANN", specialist=True, working_hours=HOURS, timezone="Europe/London",
        registered_at=AT, registered_by=STAFF,
    )  # fmt: skip
    document = json.loads(new_event(fact, source="urn:rj:service:scheduling", subject="F-ANN").to_json())
    del document["data"]["email"], document["data"]["display_name"]
    loaded = parse_event(json.dumps(document).encode()).data
    assert isinstance(loaded, FacilitatorRegistered) and loaded.email is None and loaded.display_name is None


def test_a_venue_registered_before_address_and_arrival_existed_still_loads_without_them() -> None:
    fact = VenueRegistered(
        venue_id="V-1", kind=VenueKind.community, name="Hall", visit_slots=[], timezone="Europe/London",
        registered_at=AT, registered_by=STAFF,
    )  # fmt: skip
    document = json.loads(new_event(fact, source="urn:rj:service:scheduling", subject="V-1").to_json())
    del document["data"]["address"], document["data"]["arrival"]
    loaded = parse_event(json.dumps(document).encode()).data
    assert isinstance(loaded, VenueRegistered) and loaded.address is None and loaded.arrival is None


def test_registrations_carry_the_facilitators_work_contact_and_the_venues_address_and_arrival() -> None:
    command = RegisterFacilitator(
        facilitator_id="F-ANN", specialist=False, working_hours=HOURS, actor=STAFF,
        email="ann@rj-hub.example", display_name="Ann",
    )  # fmt: skip
    assert roundtrip(command, "F-ANN") == command
    venue = RegisterVenue(
        venue_id="V-1", kind=VenueKind.community, name="Hall", actor=STAFF,
        address="1 High St\nWorcester\nWR1 1AA", arrival="Victim: side door; others: main door",
    )  # fmt: skip
    assert roundtrip(venue, "V-1") == venue
    with pytest.raises(ValidationError):
        RegisterFacilitator(facilitator_id="F", specialist=False, working_hours=HOURS, actor=STAFF, email="nope")


def test_notify_owns_its_preferences_command_and_publishes_on_rj_notify() -> None:
    assert COMMAND_OWNER["rj.notify.set-preferences"] == "notify"
    assert topics.OUTPUT_OF["notify"] == topics.NOTIFY


def test_preferences_are_personal_data_and_the_recipient_of_a_notification_is_sealed_under_the_case() -> None:
    assert pii_fields(SetNotifyPreferences) == {"language", "format", "quiet_hours", "reason"}
    assert pii_fields(NotificationScheduled) == {"recipient_id"}
    schema = NotificationScheduled.model_json_schema()["properties"]["recipient_id"]
    assert schema["x-pii-key"] == "case"


def test_no_notification_fact_has_a_field_for_content_or_an_address() -> None:
    from schemas.notify import NOTIFY_EVENTS

    for model in NOTIFY_EVENTS:
        assert not {"to", "address", "email", "phone", "subject", "body", "text", "html"} & set(model.model_fields)


def test_a_notification_fact_round_trips() -> None:
    fact = NotificationScheduled(
        case_id="case-1", notification_id="n-1", recipient_id="victim-1", recipient_kind=RecipientKind.participant,
        kind=NotificationKind.victim_information, channel=Channel.email, due_at=AT, urgent=False,
        cause_event_id="e-1", scheduled_at=AT, decided_by=SYSTEM_NOTIFY,
    )  # fmt: skip
    assert roundtrip(fact, "case-1") == fact
    cancelled = NotificationCancelled(
        case_id="case-1", notification_id="n-1", recipient_id="victim-1", recipient_kind=RecipientKind.participant,
        kind=NotificationKind.meeting_reminder, channel=None, reason_code="withdrawn", cancelled_at=AT,
        decided_by=SYSTEM_NOTIFY,
    )  # fmt: skip
    assert roundtrip(cancelled, "case-1") == cancelled


def test_opening_hours_read_days_ranges_lists_and_bank_holidays() -> None:
    hours = parse_opening_hours("mon-fri 08:00-20:00; sat 09:00-12:00, 13:00-17:00; hol 10:00-14:00")
    assert hours.weekdays[0] == ((time(8), time(20)),)
    assert hours.weekdays[4] == ((time(8), time(20)),)
    assert hours.weekdays[5] == ((time(9), time(12)), (time(13), time(17)))
    assert hours.weekdays[6] == ()
    assert hours.bank_holidays == ((time(10), time(14)),)
    assert parse_opening_hours("mon,wed 00:00-24:00").weekdays[2] == ((time(0), time(0)),)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "no opening hours"),
        ("funday 08:00-20:00", "not a day"),
        ("fri-mon 08:00-20:00", "runs backwards"),
        ("mon", "no hours"),
        ("mon 8-20", "not a window"),
        ("mon 20:00-08:00", "ends before it starts"),
        ("mon 10:00-24:30", "ends after midnight"),
    ],
)
def test_opening_hours_that_cannot_be_read_are_refused_with_a_reason(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_opening_hours(text)
    with pytest.raises(ValidationError):
        SetNotifyPreferences(case_id="c", person_id="p", actor=STAFF, quiet_hours=text or " ")
