"""Events of one RJ case as notify takes them in, for the notify domain's tests."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from schemas.commands import CommandRejected
from schemas.common import Actor, Channel, Contact
from schemas.consent import (
    PARTICIPATION,
    SYSTEM_CONSENT,
    CaseHeld,
    CaseResumed,
    CaseWithdrawalReason,
    CaseWithdrawn,
    ConsentWithdrawn,
    FacilitatorAssigned,
    PutCaseOnHold,
    RecordedThrough,
    RecordingMethod,
    RiskAssessmentRecorded,
    RiskLevel,
    SafeContactRecorded,
    SurveyInvited,
    WithdrawConsent,
)
from schemas.referral import (
    CaseAccepted,
    CaseOpened,
    CaseParticipant,
    Participant,
    ReferralRoute,
    Role,
    VictimInformationDue,
)
from schemas.scheduling import (
    SYSTEM_SCHEDULING,
    AgreementItemDueSoon,
    AgreementItemOverdue,
    CancellationReason,
    CaseClosed,
    ClosureReason,
    ItemKind,
    MeetingBooked,
    MeetingCancelled,
    MeetingKind,
)
from schemas.upstream import Offence

CASE = "case-1"
STAFF = Actor(kind="staff", id="F-ANN")
VICTIM, OFFENDER = "victim-1", "offender-1"
T0 = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)  # a Wednesday, inside the hours


def opened(
    *, victim_contact: Contact | None = None, offender_contact: Contact | None = None, at: datetime = T0
) -> CaseOpened:
    return CaseOpened(
        case_id=CASE,
        crime_reference="WM/2026/1",
        offence=Offence(code="28/3", category="burglary"),
        participants=[
            Participant(
                person_id=VICTIM, role=Role.victim, required=True, name="Vera Victim",
                contact=victim_contact or Contact(email="vera@example.org", phone="07700900001", address="1 Vic St"),
                preferred_channel=Channel.email,
            ),
            Participant(
                person_id=OFFENDER, role=Role.offender, required=True, name="Otto Offender",
                contact=offender_contact or Contact(email="otto@example.org", phone="07700900002", address="2 Off Rd"),
                preferred_channel=Channel.sms,
            ),
        ],
        routes=[ReferralRoute(route="admitted_outcome")],
        opened_at=at,
        opened_by=STAFF,
    )  # fmt: skip


def accepted(*, sensitive: bool = False) -> CaseAccepted:
    return CaseAccepted(
        case_id=CASE, crime_reference="WM/2026/1", specialist_required=sensitive, risk_assessment_required=sensitive,
        sensitivity_reasons=[], decided_at=T0, decided_by=STAFF, reason="eligible",
        participants=[CaseParticipant(person_id=VICTIM, role=Role.victim, required=True),
                      CaseParticipant(person_id=OFFENDER, role=Role.offender, required=True)],
    )  # fmt: skip


def victim_information_due() -> VictimInformationDue:
    return VictimInformationDue(
        case_id=CASE, crime_reference="WM/2026/1", person_id=VICTIM, reported_at=T0, due_by=T0 + timedelta(days=7),
        due_date=date(2026, 3, 11), working_days=5, enhanced_rights=False,
    )  # fmt: skip


def risk_assessed(safe: bool, at: datetime = T0) -> RiskAssessmentRecorded:
    return RiskAssessmentRecorded(
        case_id=CASE, assessed_at=at, level=RiskLevel.low, safe_to_proceed=safe, recorded_at=at, recorded_by=STAFF
    )


def assigned(facilitator_id: str = "F-ANN") -> FacilitatorAssigned:
    return FacilitatorAssigned(
        case_id=CASE, facilitator_id=facilitator_id, specialist=False, assigned_at=T0, assigned_by=STAFF
    )


def booked(meeting_id: str = "M1", starts_at: datetime = T0 + timedelta(days=7)) -> MeetingBooked:
    return MeetingBooked(
        case_id=CASE, meeting_id=meeting_id, kind=MeetingKind.conference, starts_at=starts_at,
        ends_at=starts_at + timedelta(hours=2), lead_facilitator_id="F-ANN", facilitator_ids=["F-ANN", "F-BOB"],
        venue_id="V-HUB", attendee_ids=[VICTIM, OFFENDER], booked_at=T0, booked_by=STAFF,
    )  # fmt: skip


def meeting_cancelled(
    meeting_id: str = "M1", reason: CancellationReason = CancellationReason.requested
) -> MeetingCancelled:
    return MeetingCancelled(
        case_id=CASE, meeting_id=meeting_id, reason_code=reason, cancelled_at=T0, cancelled_by=STAFF
    )


def withdraw(person_id: str = OFFENDER) -> WithdrawConsent:
    return WithdrawConsent(
        case_id=CASE, actor=STAFF, person_id=person_id, purpose=PARTICIPATION,
        through=RecordedThrough.facilitator, method=RecordingMethod.phone,
    )  # fmt: skip


def consent_withdrawn(command_id: str, person_id: str = OFFENDER) -> ConsentWithdrawn:
    return ConsentWithdrawn(
        case_id=CASE, person_id=person_id, purpose=PARTICIPATION, through=RecordedThrough.facilitator,
        method=RecordingMethod.phone, withdrawn_at=T0, withdrawn_by=STAFF, recorded_at=T0, command_id=command_id,
    )  # fmt: skip


def case_withdrawn() -> CaseWithdrawn:
    return CaseWithdrawn(
        case_id=CASE, reason=CaseWithdrawalReason.consent_withdrawn, withdrawn_at=T0, decided_by=SYSTEM_CONSENT
    )


def hold() -> PutCaseOnHold:
    return PutCaseOnHold(case_id=CASE, actor=STAFF, concern="worry", raised_by="police")


def held(command_id: str) -> CaseHeld:
    return CaseHeld(case_id=CASE, concern="worry", raised_by="police", held_at=T0, held_by=STAFF, command_id=command_id)


def resumed() -> CaseResumed:
    return CaseResumed(case_id=CASE, resumed_at=T0, resumed_by=STAFF, reason="safe again")


def rejected(command_id: str, command_type: str) -> CommandRejected:
    return CommandRejected(
        case_id=CASE, command_id=command_id, command_type=command_type, service="consent", reason="no", rejected_at=T0
    )


def due_soon(item_id: str = "I1") -> AgreementItemDueSoon:
    return AgreementItemDueSoon(
        case_id=CASE, item_id=item_id, kind=ItemKind.apology, owner_id=OFFENDER, due_date=date(2026, 4, 1),
        flagged_at=T0, flagged_by=SYSTEM_SCHEDULING,
    )  # fmt: skip


def overdue(item_id: str = "I1") -> AgreementItemOverdue:
    return AgreementItemOverdue(
        case_id=CASE, item_id=item_id, kind=ItemKind.reparation, due_date=date(2026, 4, 1),
        tell_person_ids=[VICTIM], flagged_at=T0, flagged_by=SYSTEM_SCHEDULING,
    )  # fmt: skip


def closed(reason: ClosureReason = ClosureReason.completed) -> CaseClosed:
    return CaseClosed(case_id=CASE, reason=reason, closed_at=T0, closed_by=SYSTEM_SCHEDULING)


def survey(person_id: str) -> SurveyInvited:
    return SurveyInvited(
        case_id=CASE, person_id=person_id, role=Role.victim, closure_reason=ClosureReason.completed, invited_at=T0,
        invited_by=SYSTEM_CONSENT,
    )  # fmt: skip


def safe_contact(person_id: str, channels: list[Channel], **kw: object) -> SafeContactRecorded:
    return SafeContactRecorded(
        case_id=CASE, person_id=person_id, safe_channels=channels, voicemail_ok=False,
        letters_to_home_ok=bool(kw.pop("letters_to_home_ok", False)), through=RecordedThrough.facilitator,
        method=RecordingMethod.phone, agreed_at=T0, recorded_at=T0, recorded_by=STAFF, **kw,  # type: ignore[arg-type]
    )  # fmt: skip
