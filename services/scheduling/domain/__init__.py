"""Scheduling decisions, pure: meetings on ready cases, the resource calendar, agreements, closure.

Every decision is ``(case, book, message) -> (new case, new book, [Emit])``. A command that is not
allowed changes nothing and emits one ``CommandRejected`` saying why. This package is the service's
``domain``; ``handle`` takes any message it consumes to the decision that owns it:
- ``model``: the state (``CaseSchedule`` per case, the shared ``ResourceBook``) and the guards every
  decision starts with;
- ``meetings``: what the consent service tells us about a case's participants and readiness, registered
  facilitators and venues, availability, and proposing, booking, rescheduling, cancelling and recording
  meetings (DOMAIN rule 1);
- ``agreements``: the agreement, its items and payments, and their follow-up (due soon, overdue);
- ``closure``: declines, withdrawals, lost readiness, contact attempts, and closing a case;
- ``indirect``: indirect RJ, the contact form, recipients' advance agreements and the items the facilitator
  passes between the parties (DOMAIN rule 9); after every command accepted (read in case order), ``release_due``
  lets go what nothing stands against any more, and ``release_watch`` says which items wait only for a time or
  were freed by a fact from another topic (the sweeper's index).

Rule 1 (nothing about a meeting without the current consent of every required participant) is held
twice over: a meeting is proposed, booked, rescheduled or recorded only on a case the consent service
called ready (``meetings``), and a withdrawal cancels every pending meeting at once and closes the case
(``closure``), so that a booking that arrives afterwards finds the case closed and is rejected.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from schemas.commands import Command, CommandRejected
from schemas.consent import (
    AddParticipant,
    CaseHeld,
    CaseReadinessLost,
    CaseReadyForMeeting,
    CaseResumed,
    CaseWithdrawn,
    ConsentDeclined,
    ConsentGiven,
    ConsentWithdrawn,
    ContactAttemptRecorded,
    DeclineConsent,
    FacilitatorAssigned,
    ParticipantAdded,
    PreparationMeetingRecorded,
    PutCaseOnHold,
    RecordRiskAssessment,
    RiskAssessmentRecorded,
    WithdrawConsent,
)
from schemas.envelope import EventData
from schemas.indirect import (
    AgreeToReceiveItems,
    ApproveIndirectItem,
    RecordItemDelivered,
    RejectIndirectItem,
    ReleaseDueItems,
    ReleaseTrigger,
    RequestItems,
    StopReceivingItems,
    SubmitIndirectItem,
    SwitchContactForm,
    WithdrawIndirectItem,
)
from schemas.referral import CaseAccepted
from schemas.scheduling import (
    BookMeeting,
    CancelMeeting,
    CloseCase,
    CompleteAgreementItem,
    ProposeMeeting,
    RecordAgreement,
    RecordAvailability,
    RecordMeetingHeld,
    RecordPayment,
    RegisterFacilitator,
    RegisterVenue,
    RegistrationCommand,
    RescheduleMeeting,
)
from services.runtime.decision import Emit
from services.scheduling.domain.agreements import (
    complete_agreement_item,
    follow_up,
    record_agreement,
    record_payment,
    watched,
)
from services.scheduling.domain.closure import (
    close_case,
    on_add_command,
    on_assessment_command,
    on_case_held,
    on_case_resumed,
    on_case_withdrawn,
    on_consent_declined,
    on_consent_rejected,
    on_consent_withdrawn,
    on_contact_attempt_recorded,
    on_hold_command,
    on_preparation_meeting_recorded,
    on_readiness_lost,
    on_risk_assessment_recorded,
    on_withdrawal_command,
)
from services.scheduling.domain.indirect import (
    agree_to_receive,
    approve_item,
    record_delivered,
    reject_item,
    release_due,
    release_due_items,
    release_refusal,
    release_watch,
    request_items,
    stop_receiving,
    submit_item,
    switch_contact_form,
    withdraw_item,
)
from services.scheduling.domain.meetings import (
    book_meeting,
    cancel_meeting,
    on_case_accepted,
    on_case_ready,
    on_consent_given,
    on_facilitator_assigned,
    on_participant_added,
    propose_meeting,
    record_availability,
    record_meeting_held,
    register_facilitator,
    register_venue,
    reschedule_meeting,
    resources_touched,
)
from services.scheduling.domain.model import (
    DEFAULT_POLICY,
    SERVICE,
    Agreement,
    AgreementItem,
    Availability,
    Booking,
    CaseClosure,
    CaseSchedule,
    FacilitatorProfile,
    Meeting,
    Outcome,
    Policy,
    ResourceBook,
    VenueProfile,
    facilitator_key,
    local_day,
    person_key,
    venue_key,
)

__all__ = [
    "CONSUMES",
    "DEFAULT_POLICY",
    "HANDLERS",
    "REGISTRATIONS",
    "SERVICE",
    "Agreement",
    "AgreementItem",
    "Availability",
    "Booking",
    "CaseClosure",
    "CaseSchedule",
    "Emit",
    "FacilitatorProfile",
    "Handler",
    "Meeting",
    "Outcome",
    "Policy",
    "ResourceBook",
    "VenueProfile",
    "book_meeting",
    "cancel_meeting",
    "close_case",
    "complete_agreement_item",
    "facilitator_key",
    "follow_up",
    "handle",
    "local_day",
    "on_case_accepted",
    "on_case_ready",
    "on_case_withdrawn",
    "on_consent_declined",
    "on_consent_given",
    "on_consent_withdrawn",
    "on_facilitator_assigned",
    "on_participant_added",
    "on_readiness_lost",
    "person_key",
    "propose_meeting",
    "record_agreement",
    "record_availability",
    "record_meeting_held",
    "record_payment",
    "register_facilitator",
    "register_venue",
    "release_due",
    "release_refusal",
    "release_watch",
    "reschedule_meeting",
    "resources_touched",
    "subject_of",
    "venue_key",
    "watched",
]

# --- dispatch -----------------------------------------------------------------------------------

Handler = Callable[..., Outcome]

HANDLERS: dict[type[EventData], Handler] = {
    CaseAccepted: on_case_accepted,
    ConsentGiven: on_consent_given,
    ConsentDeclined: on_consent_declined,
    ConsentWithdrawn: on_consent_withdrawn,
    CaseReadyForMeeting: on_case_ready,
    CaseReadinessLost: on_readiness_lost,
    CaseWithdrawn: on_case_withdrawn,
    FacilitatorAssigned: on_facilitator_assigned,
    ParticipantAdded: on_participant_added,
    CaseHeld: on_case_held,
    CaseResumed: on_case_resumed,
    CommandRejected: on_consent_rejected,
    ContactAttemptRecorded: on_contact_attempt_recorded,
    PreparationMeetingRecorded: on_preparation_meeting_recorded,
    RiskAssessmentRecorded: on_risk_assessment_recorded,
    # The consent service's commands that can stop the case or cost it its readiness, followed in case order
    # (see ``closure``).
    WithdrawConsent: on_withdrawal_command,
    DeclineConsent: on_withdrawal_command,
    PutCaseOnHold: on_hold_command,
    RecordRiskAssessment: on_assessment_command,
    AddParticipant: on_add_command,
    RecordAvailability: record_availability,
    ProposeMeeting: propose_meeting,
    BookMeeting: book_meeting,
    RescheduleMeeting: reschedule_meeting,
    CancelMeeting: cancel_meeting,
    RecordMeetingHeld: record_meeting_held,
    RecordAgreement: record_agreement,
    RecordPayment: record_payment,
    CompleteAgreementItem: complete_agreement_item,
    CloseCase: close_case,
    # Indirect RJ (``indirect``).
    SwitchContactForm: switch_contact_form,
    AgreeToReceiveItems: agree_to_receive,
    StopReceivingItems: stop_receiving,
    RequestItems: request_items,
    SubmitIndirectItem: submit_item,
    ApproveIndirectItem: approve_item,
    RejectIndirectItem: reject_item,
    WithdrawIndirectItem: withdraw_item,
    ReleaseDueItems: release_due_items,
    RecordItemDelivered: record_delivered,
}

REGISTRATIONS: dict[type[EventData], Callable[..., tuple[ResourceBook, list[Emit]]]] = {
    RegisterFacilitator: register_facilitator,
    RegisterVenue: register_venue,
}

CONSUMES: frozenset[str] = frozenset(model.event_type for model in (*HANDLERS, *REGISTRATIONS))
"""``rj.case.accepted`` (rj.referral); consent facts, facilitator assignments, added participants, readiness,
holds, risk assessments and consent's rejections (rj.consent); its commands, and the withdraw, decline, hold,
risk-assessment and add-participant commands it follows (rj.commands)."""


def subject_of(message: EventData) -> str:
    """What a message is about, and so the subject of what it causes: a case id, or a facilitator or venue id."""
    if isinstance(message, RegisterFacilitator):
        return message.facilitator_id
    if isinstance(message, RegisterVenue):
        return message.venue_id
    return message.case_id  # type: ignore[attr-defined, no-any-return]


def handle(
    case: CaseSchedule | None,
    book: ResourceBook,
    message: EventData,
    *,
    command_id: str,
    now: datetime,
    policy: Policy = DEFAULT_POLICY,
) -> Outcome:
    """Apply any message in ``CONSUMES``; a registration leaves ``case`` (pass ``None``) as it is. ``policy``
    holds the settings a decision depends on (the default is the settings' defaults)."""
    if isinstance(message, RegistrationCommand):
        book, emits = REGISTRATIONS[type(message)](book, message, command_id=command_id, now=now)
        return case, book, emits
    if isinstance(message, CloseCase):
        return close_case(case, book, message, command_id=command_id, now=now, policy=policy)
    case, book, emits = HANDLERS[type(message)](case, book, message, command_id=command_id, now=now)
    refused = any(isinstance(e.data, CommandRejected) for e in emits)
    if case is not None and case.indirect.waiting and not refused:
        # Whatever this command changed (an approval, an agreement, a switch to indirect), an indirect item that
        # nothing stands against any more goes now; one that something does stand against stays (rule 9). Only a
        # command, read in case order, releases (``release_refusal``): after a fact from another topic a stop or
        # a withdrawal of the item may still be unread on rj.commands, so an item it frees waits on the release
        # watch for the sweeper's command.
        in_case_order = isinstance(message, Command)
        case, released = release_due(case, now, trigger=ReleaseTrigger.decision, in_case_order=in_case_order)
        emits = [*emits, *released]
    return case, book, emits
