"""Facts the scheduling service publishes on ``rj.scheduling``, and the commands it takes from ``rj.commands``.

Case facts have the case id as subject and key. Facilitators and venues are not part of any case: their
registration commands and facts have the facilitator or venue id as subject and key instead.
"""

from __future__ import annotations

from datetime import date, time
from enum import StrEnum
from typing import Annotated, ClassVar, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from schemas.commands import Command
from schemas.common import Actor
from schemas.envelope import EventData
from schemas.pii import CasePii, Pii

SYSTEM_SCHEDULING = Actor(kind="system", id="scheduling-service")

Weekday = Annotated[int, Field(ge=0, le=6, description="0 is Monday, 6 is Sunday")]


def _known_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # "Europe" is a directory: IsADirectoryError
        raise ValueError(f"unknown time zone {name!r}") from None
    return name


TimeZone = Annotated[str, AfterValidator(_known_zone), Field(description="An IANA time zone name")]


class MeetingKind(StrEnum):
    conference = "conference"  # face to face: two facilitators, a venue or a prison visit
    indirect = "indirect"  # letters or messages passed by one facilitator, no venue


class VenueKind(StrEnum):
    community = "community"
    prison = "prison"


class MeetingStatus(StrEnum):
    booked = "booked"
    held = "held"
    cancelled = "cancelled"


class CancellationReason(StrEnum):
    requested = "requested"  # by command, with a free-text reason
    case_withdrawn = "case_withdrawn"
    case_closed = "case_closed"
    readiness_lost = "readiness_lost"
    case_paused = "case_paused"  # a safeguarding hold; participants are told only that the process is paused
    contact_form_indirect = "contact_form_indirect"  # a party switched the case to indirect contact


class ClosureReason(StrEnum):
    completed = "completed"
    withdrawn = "withdrawn"
    not_suitable = "not_suitable"
    declined = "declined"
    uncontactable = "uncontactable"
    agreement_not_met = "agreement_not_met"


CLOSABLE_BY_COMMAND: frozenset[ClosureReason] = frozenset(
    {ClosureReason.not_suitable, ClosureReason.uncontactable, ClosureReason.agreement_not_met}
)
"""Reasons staff may close a case with; ``completed``, ``withdrawn`` and ``declined`` follow from the process."""


class ItemKind(StrEnum):
    apology = "apology"
    reparation = "reparation"  # money, tracked as payments
    work = "work"
    other = "other"


class _Value(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class TimeWindow(_Value):
    starts_at: AwareDatetime
    ends_at: AwareDatetime

    @model_validator(mode="after")
    def _ends_after_start(self) -> Self:
        if self.ends_at <= self.starts_at:
            raise ValueError("a time window must end after it starts")
        return self


class WeeklyHours(_Value):
    """A weekly recurring window in the owner's time zone (working hours, a prison visit slot)."""

    weekday: Weekday
    start: time
    end: time

    @model_validator(mode="after")
    def _ends_after_start(self) -> Self:
        if self.end <= self.start:
            raise ValueError("weekly hours must end after they start")
        return self


class VisitSlot(WeeklyHours):
    name: str = Field(min_length=1)


# --- registration (not about a case) -------------------------------------------------------------


class RegistrationCommand(EventData):
    """A command about a resource rather than a case: keyed by the facilitator or venue id."""

    actor: Actor
    reason: str | None = None


class RegisterFacilitator(RegistrationCommand):
    """Register or update a facilitator. Scheduling needs only the id; ``email`` and ``display_name`` are the
    facilitator's work contact, which the notify service writes to them at and signs participants' messages
    with (staff's work details, not a participant's personal data; optional, so older commands still load)."""

    event_type: ClassVar[str] = "rj.facilitator.register"

    facilitator_id: str = Field(min_length=1)
    specialist: bool
    working_hours: list[WeeklyHours] = Field(min_length=1)
    timezone: TimeZone = "Europe/London"
    email: str | None = Field(
        default=None, min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$", description="Work email"
    )
    display_name: str | None = Field(
        default=None, min_length=1, max_length=200, description="How participants' messages name the facilitator"
    )


class RegisterVenue(RegistrationCommand):
    event_type: ClassVar[str] = "rj.venue.register"

    venue_id: str = Field(min_length=1)
    kind: VenueKind
    name: str = Field(min_length=1)
    visit_slots: list[VisitSlot] = Field(default_factory=list, description="A prison's named visit slots")
    timezone: TimeZone = "Europe/London"
    address: str | None = Field(
        default=None, min_length=1, max_length=400, description="The venue's postal address, for attendees"
    )
    arrival: str | None = Field(
        default=None,
        min_length=1,
        max_length=2000,
        description="Arrival and waiting arrangements told to every attendee (e.g. separate entrances)",
    )

    @model_validator(mode="after")
    def _slots_belong_to_prisons(self) -> Self:
        if self.kind is VenueKind.prison and not self.visit_slots:
            raise ValueError("a prison needs at least one visit slot")
        if self.kind is not VenueKind.prison and self.visit_slots:
            raise ValueError("only a prison has visit slots")
        if len({s.name for s in self.visit_slots}) != len(self.visit_slots):
            raise ValueError("visit slot names must be unique")
        return self


class FacilitatorRegistered(EventData):
    event_type: ClassVar[str] = "rj.facilitator.registered"

    facilitator_id: str
    specialist: bool
    working_hours: list[WeeklyHours]
    timezone: str
    registered_at: AwareDatetime
    registered_by: Actor
    email: str | None = Field(default=None, description="Work email (absent on facts written before it existed)")
    display_name: str | None = None


class VenueRegistered(EventData):
    event_type: ClassVar[str] = "rj.venue.registered"

    venue_id: str
    kind: VenueKind
    name: str
    visit_slots: list[VisitSlot]
    timezone: str
    registered_at: AwareDatetime
    registered_by: Actor
    address: str | None = Field(default=None, description="Absent on facts written before it existed")
    arrival: str | None = None


# --- case commands ------------------------------------------------------------------------------


class RecordAvailability(Command):
    """When a participant can attend; replaces what was recorded for them before."""

    event_type: ClassVar[str] = "rj.availability.record"

    person_id: str = Field(min_length=1)
    windows: Annotated[list[TimeWindow], Pii]


class MeetingPlan(Command):
    """A face-to-face conference or indirect RJ, as proposed or booked."""

    meeting_id: str = Field(min_length=1)
    kind: MeetingKind
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    lead_facilitator_id: str = Field(min_length=1)
    co_facilitator_id: str | None = Field(default=None, description="A conference's second facilitator")
    venue_id: str | None = Field(default=None, description="A conference's venue: a community venue or a prison")
    visit_slot: str | None = Field(default=None, description="The prison's named visit slot, for a prison visit")


class ProposeMeeting(MeetingPlan):
    """Check a plan against every rule and offer it, holding nothing."""

    event_type: ClassVar[str] = "rj.meeting.propose"


class BookMeeting(MeetingPlan):
    event_type: ClassVar[str] = "rj.meeting.book"


class RescheduleMeeting(Command):
    event_type: ClassVar[str] = "rj.meeting.reschedule"

    meeting_id: str = Field(min_length=1)
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    venue_id: str | None = Field(default=None, description="A new venue; none keeps the current one")
    visit_slot: str | None = Field(default=None, description="A new visit slot; none keeps the current one")


class CancelMeeting(Command):
    """Cancel a booked meeting; ``reason`` is required."""

    event_type: ClassVar[str] = "rj.meeting.cancel"

    meeting_id: str = Field(min_length=1)


class RecordMeetingHeld(Command):
    event_type: ClassVar[str] = "rj.meeting.record-held"

    meeting_id: str = Field(min_length=1)
    held_at: AwareDatetime


class AgreementItemTerms(_Value):
    item_id: str = Field(min_length=1)
    kind: ItemKind
    description: Annotated[str, Pii]
    owner_id: str = Field(min_length=1, description="The participant who undertakes it")
    due_date: date
    amount_pence: int | None = Field(default=None, gt=0, description="A reparation's amount")


class RecordAgreement(Command):
    event_type: ClassVar[str] = "rj.agreement.record"

    meeting_id: str = Field(min_length=1)
    items: list[AgreementItemTerms] = Field(min_length=1)
    consented_by: list[str] = Field(description="The participants whose consent to this agreement is recorded")


class RecordPayment(Command):
    event_type: ClassVar[str] = "rj.reparation-payment.record"

    item_id: str = Field(min_length=1)
    amount_pence: int = Field(gt=0)
    paid_at: AwareDatetime


class CompleteAgreementItem(Command):
    event_type: ClassVar[str] = "rj.agreement-item.complete"

    item_id: str = Field(min_length=1)


class CloseCase(Command):
    """Close a case that will not proceed: ``not_suitable``, ``uncontactable`` or ``agreement_not_met``, with a
    ``reason`` (staff decide it, and say why)."""

    event_type: ClassVar[str] = "rj.case.close"

    closure_reason: ClosureReason


# --- case facts ---------------------------------------------------------------------------------


class AvailabilityRecorded(EventData):
    event_type: ClassVar[str] = "rj.availability.recorded"

    case_id: str
    person_id: str
    windows: Annotated[list[TimeWindow], Pii]
    recorded_at: AwareDatetime
    recorded_by: Actor


class _MeetingFacts(EventData):
    case_id: str
    meeting_id: str
    kind: MeetingKind
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    lead_facilitator_id: str
    facilitator_ids: list[str]
    venue_id: str | None = None
    visit_slot: str | None = None
    attendee_ids: list[str] = Field(description="Participants booked to attend (none for indirect RJ)")


class MeetingProposed(_MeetingFacts):
    event_type: ClassVar[str] = "rj.meeting.proposed"

    proposed_at: AwareDatetime
    proposed_by: Actor


class MeetingBooked(_MeetingFacts):
    event_type: ClassVar[str] = "rj.meeting.booked"

    booked_at: AwareDatetime
    booked_by: Actor


class MeetingRescheduled(_MeetingFacts):
    """The meeting's new plan in full; attendees are re-derived from current consents."""

    event_type: ClassVar[str] = "rj.meeting.rescheduled"

    previous_starts_at: AwareDatetime
    previous_ends_at: AwareDatetime
    rescheduled_at: AwareDatetime
    rescheduled_by: Actor
    reason: Annotated[str | None, Pii] = None


class MeetingCancelled(EventData):
    event_type: ClassVar[str] = "rj.meeting.cancelled"

    case_id: str
    meeting_id: str
    reason_code: CancellationReason
    reason: Annotated[str | None, Pii] = Field(
        default=None, description="Staff's words when cancelled by command; else none"
    )
    cancelled_at: AwareDatetime
    cancelled_by: Actor


class MeetingAttendeeRemoved(EventData):
    """A participant who is not required withdrew or declined: their place at a booked meeting is released."""

    event_type: ClassVar[str] = "rj.meeting.attendee-removed"

    case_id: str
    meeting_id: str
    person_id: Annotated[str, CasePii] = Field(
        description="Who withdrew or declined: never to be told to other participants (under the case's key, so "
        "staff still read it after the person is erased)"
    )
    removed_at: AwareDatetime
    removed_by: Actor


class MeetingHeld(EventData):
    event_type: ClassVar[str] = "rj.meeting.held"

    case_id: str
    meeting_id: str
    kind: MeetingKind
    held_at: AwareDatetime
    recorded_at: AwareDatetime
    recorded_by: Actor


class AgreementRecorded(EventData):
    event_type: ClassVar[str] = "rj.agreement.recorded"

    case_id: str
    meeting_id: str
    items: list[AgreementItemTerms]
    consented_by: list[str]
    recorded_at: AwareDatetime
    recorded_by: Actor


class PaymentRecorded(EventData):
    event_type: ClassVar[str] = "rj.reparation-payment.recorded"

    case_id: str
    item_id: str
    amount_pence: int
    paid_at: AwareDatetime
    total_paid_pence: int
    amount_due_pence: int
    recorded_at: AwareDatetime
    recorded_by: Actor


class AgreementItemCompleted(EventData):
    event_type: ClassVar[str] = "rj.agreement-item.completed"

    case_id: str
    item_id: str
    kind: ItemKind
    by_payments: bool = Field(description="A reparation whose payments reached its amount")
    completed_at: AwareDatetime
    completed_by: Actor


class AgreementItemDueSoon(EventData):
    """An agreement item not yet completed falls due within the ``item_due_soon_working_days`` setting's working
    days (England and Wales): a reminder for its owner and the facilitators, sent by the notify service. Emitted
    once per item; never while the case is on hold or awaiting a withdrawal's verdict (it comes after the
    resume if the item is still open and not yet overdue), nor after closure."""

    event_type: ClassVar[str] = "rj.agreement-item.due-soon"

    case_id: str
    item_id: str
    kind: ItemKind
    owner_id: str = Field(description="The participant who undertook the item: the one to be reminded")
    due_date: date
    flagged_at: AwareDatetime
    flagged_by: Actor


class AgreementItemOverdue(EventData):
    """An agreement item's due date has passed and it is not completed: the harmed person is to be told
    (DOMAIN stage 6). Emitted once per item, under the same pauses as ``AgreementItemDueSoon``.

    Participant-facing: it names who is to be told (``tell_person_ids``, the victims on the case) and says
    nothing of the item's owner (DOMAIN rule 3): no owner, no description, no causation chain."""

    event_type: ClassVar[str] = "rj.agreement-item.overdue"
    participant_facing: ClassVar[bool] = True

    case_id: str
    item_id: str
    kind: ItemKind
    due_date: date
    tell_person_ids: list[str] = Field(description="The harmed people on the case, who are to be told")
    flagged_at: AwareDatetime
    flagged_by: Actor


class CaseClosed(EventData):
    """The case is closed, with its reason code. The closure notice to participants is built from it.

    Participant-facing: a closure by a withdrawal or a decline says that and nothing more, never who or why
    (DOMAIN rule 2; who and why are in the staff-only ``ConsentWithdrawn`` / ``ConsentDeclined``). Its envelope
    has no ``causationid`` and its ``correlationid`` is the case id, so no chain leads from it to what closed
    the case (a withdrawal command or fact, a staff command); its id is still derived from the case
    (``case-closed``), so a replay yields the same event.

    It had ``withdrawn_by`` (optional) before it was made participant-facing; dropping it kept it at v1, as a
    reader of either shape accepts the other (absent is none; an unknown field is ignored)."""

    event_type: ClassVar[str] = "rj.case.closed"
    participant_facing: ClassVar[bool] = True

    case_id: str
    reason: ClosureReason
    closed_at: AwareDatetime
    closed_by: Actor = Field(description="Staff who closed it by command, else the scheduling service")
    detail: Annotated[str | None, Pii] = Field(
        default=None,
        description="Staff's words when closed by command (only then): never a withdrawal's or a decline's reason",
    )
    failed_item_ids: list[str] | None = Field(
        default=None,
        description="Closed as agreement_not_met: the agreement items overdue and not completed (ids only)",
    )


SCHEDULING_EVENTS: tuple[type[EventData], ...] = (
    FacilitatorRegistered,
    VenueRegistered,
    AvailabilityRecorded,
    MeetingProposed,
    MeetingBooked,
    MeetingRescheduled,
    MeetingCancelled,
    MeetingAttendeeRemoved,
    MeetingHeld,
    AgreementRecorded,
    PaymentRecorded,
    AgreementItemCompleted,
    AgreementItemDueSoon,
    AgreementItemOverdue,
    CaseClosed,
)

SCHEDULING_COMMANDS: tuple[type[EventData], ...] = (
    RegisterFacilitator,
    RegisterVenue,
    RecordAvailability,
    ProposeMeeting,
    BookMeeting,
    RescheduleMeeting,
    CancelMeeting,
    RecordMeetingHeld,
    RecordAgreement,
    RecordPayment,
    CompleteAgreementItem,
    CloseCase,
)
