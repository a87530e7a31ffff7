"""Facts the consent service publishes on ``rj.consent`` (subject and key: the case id), and its commands.

Consent is granular: per person and per purpose. ``participation`` is consent to take part at all;
``share:<information>`` is consent to share one piece of information with the other side. A case is
ready for a meeting only when a facilitator is assigned and has met each required participant, every
required participant has given ``participation`` consent, the latest risk assessment (by ``assessed_at``)
finds it safe where one is needed, and a sensitive case has a specialist facilitator. A required participant
under 18 needs a parent or guardian on the case (``rj.participant.add``), who is required in turn.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, ClassVar, Final

from pydantic import AwareDatetime, BeforeValidator, Field, PlainSerializer, WithJsonSchema

from schemas.commands import Command
from schemas.common import Actor, Channel
from schemas.envelope import EventData
from schemas.pii import CasePii, Pii
from schemas.referral import CaseParticipant, Language, Role
from schemas.scheduling import ClosureReason

PARTICIPATION: Final = "participation"
SHARE_PREFIX: Final = "share:"

Purpose = Annotated[
    str,
    Field(
        pattern=r"^(participation|share:[a-z0-9][a-z0-9_.-]{0,99})$",
        description="'participation' (taking part at all) or 'share:<information>' (sharing that with the other side)",
    ),
]


def sharing(information: str) -> str:
    """The purpose of sharing one named piece of information with the other side."""
    return f"{SHARE_PREFIX}{information}"


SYSTEM_CONSENT = Actor(kind="system", id="consent-service")


class RecordedThrough(StrEnum):
    """Through whom a consent decision reached us."""

    participant = "participant"  # the participant themself
    facilitator = "facilitator"


class RecordingMethod(StrEnum):
    in_person = "in_person"
    phone = "phone"
    letter = "letter"
    email = "email"
    online = "online"


class RiskLevel(StrEnum):
    low = "low"
    medium = "medium"
    high = "high"


class CaseWithdrawalReason(StrEnum):
    consent_withdrawn = "consent_withdrawn"
    consent_declined = "consent_declined"


# --- commands -----------------------------------------------------------------------------------


class AssignFacilitator(Command):
    """Assign a registered facilitator to the case. Whether they are a specialist is not the sender's to say:
    the consent service takes it from the facilitator register (scheduling's ``rj.facilitator.registered``)."""

    event_type: ClassVar[str] = "rj.facilitator.assign"

    facilitator_id: str = Field(min_length=1)


class RecordPreparationMeeting(Command):
    event_type: ClassVar[str] = "rj.preparation-meeting.record"

    person_id: str = Field(min_length=1)
    met_at: AwareDatetime
    method: RecordingMethod


class RecordRiskAssessment(Command):
    event_type: ClassVar[str] = "rj.risk-assessment.record"

    assessed_at: AwareDatetime
    level: RiskLevel
    safe_to_proceed: bool


class ConsentDecision(Command):
    """Base of give / decline / withdraw: whose consent, to what, through whom, recorded how."""

    person_id: str = Field(min_length=1)
    purpose: Purpose = PARTICIPATION
    through: RecordedThrough
    method: RecordingMethod
    decided_at: AwareDatetime | None = Field(
        default=None,
        description="When the person decided (e.g. the date on a withdrawal letter), if earlier than its recording; "
        "none means now. Not accepted in the future.",
    )


class GiveConsent(ConsentDecision):
    event_type: ClassVar[str] = "rj.consent.give"


class DeclineConsent(ConsentDecision):
    event_type: ClassVar[str] = "rj.consent.decline"


class WithdrawConsent(ConsentDecision):
    """Accepted at any time until the case closes; no reason needed, and never asked of the participant."""

    event_type: ClassVar[str] = "rj.consent.withdraw"


class PutCaseOnHold(Command):
    """A safeguarding concern stops everything on the case until it is resolved: from any open state, by staff,
    with the concern and who raised it. The services that contact people or book meetings read this command
    themselves, in case order (as they read withdrawals), and act on no booking after it."""

    event_type: ClassVar[str] = "rj.case.put-on-hold"

    concern: Annotated[str, Pii] = Field(min_length=1, max_length=4000, description="What the concern is")
    raised_by: Annotated[str, Pii] = Field(
        min_length=1, max_length=400, description="Who raised it (a name, a role, an agency)"
    )


class ResumeCase(Command):
    """Lift a safeguarding hold, by staff, saying why. The case is ready again only once readiness is re-derived,
    and that needs a risk assessment made after the concern was raised."""

    event_type: ClassVar[str] = "rj.case.resume"


class AddParticipant(Command):
    """Staff add someone who takes part for or beside a participant (``supports``): a supporter, a parent or
    guardian, an advocate or intermediary, or an interpreter (with the ``language``). Victims and offenders come
    from upstream only. Only ids and roles travel: contact details are not the consent service's to hold. A parent
    or guardian of a victim or offender is required as the person they are there for is: their consent to take
    part is needed before a meeting, and their decline or withdrawal stops the case. Anyone else added attends a
    meeting only with their own consent, and their decisions stop nothing."""

    event_type: ClassVar[str] = "rj.participant.add"

    person_id: str = Field(min_length=1)
    role: Role
    supports: str = Field(min_length=1, description="The person_id of the participant they take part for")
    language: Language | None = Field(default=None, description="The language an interpreter interprets")


class ContactMethod(StrEnum):
    """How staff tried to reach a participant."""

    phone = "phone"
    sms = "sms"
    email = "email"
    letter = "letter"
    visit = "visit"


class ContactOutcome(StrEnum):
    reached = "reached"
    no_answer = "no_answer"
    message_left = "message_left"
    undeliverable = "undeliverable"  # wrong number, bounced email, returned letter


class SafeContactBreach(StrEnum):
    """What a contact attempt broke of the person's safe-contact record, as a code (``none``: nothing). The method
    is on the fact in clear, so the code says all the free text did (which channel, a letter or a visit)."""

    none = "none"
    unsafe_channel = "unsafe_channel"  # the method's channel is not among the safe ones
    no_safe_address = "no_safe_address"  # a letter or visit, with the home unsafe and no alternative address
    voicemail_not_allowed = "voicemail_not_allowed"  # a message left by phone, voicemail not allowed
    unknown = "unknown"  # erased, or a v1 detail this version cannot read


SAFE_CONTACT_BREACH_WIDTH: Final = max(len(code) for code in SafeContactBreach)
"""Every breach code travels padded with spaces to this width: sealing preserves length, so codes of different
lengths would say, through the token's length, whether an attempt broke the record and which rule."""

_BREACH_PATTERN = "^(" + "|".join(SafeContactBreach) + ") *$"


def _read_breach(value: Any) -> Any:
    """A code, padded or not; or what v1 wrote (``""`` for none, else staff-facing free text naming the rule)."""
    if not isinstance(value, str) or isinstance(value, SafeContactBreach):
        return value
    text = value.strip()
    if text in {code.value for code in SafeContactBreach}:
        return SafeContactBreach(text)
    if not text:
        return SafeContactBreach.none
    for phrase, code in (
        ("as a safe channel", SafeContactBreach.unsafe_channel),
        ("no address safe", SafeContactBreach.no_safe_address),
        ("leaving a voicemail", SafeContactBreach.voicemail_not_allowed),
    ):
        if phrase in text:
            return code
    return SafeContactBreach.unknown


SafeContactBreachCode = Annotated[
    SafeContactBreach,
    BeforeValidator(_read_breach),
    PlainSerializer(lambda code: code.value.ljust(SAFE_CONTACT_BREACH_WIDTH), return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": _BREACH_PATTERN,
            "maxLength": SAFE_CONTACT_BREACH_WIDTH,
            "description": f"A SafeContactBreach code, written padded with spaces to {SAFE_CONTACT_BREACH_WIDTH} "
            "characters (so its sealed length is the same whatever it says); read with or without the padding",
        }
    ),
]
"""A breach code as the contract carries it: the enum in Python, padded to ``SAFE_CONTACT_BREACH_WIDTH`` in JSON."""


class RecordContactAttempt(Command):
    """Staff record one attempt to contact a participant: when, how, and what came of it. It reports something that
    already happened, so an attempt that broke the person's safe-contact record is recorded too (DOMAIN rule 6), with
    a sealed flag on the fact, never refused."""

    event_type: ClassVar[str] = "rj.contact.record-attempt"

    person_id: str = Field(min_length=1)
    attempted_at: AwareDatetime
    method: ContactMethod
    outcome: ContactOutcome
    note: Annotated[str | None, Pii] = Field(default=None, max_length=4000)


NOTE_MAX_CHARS: Final = 4000
"""The longest case note, survey comment or alternative contact detail accepted (a refusal beyond it)."""


class AddCaseNote(Command):
    """Staff record a case note: free text, personal data (sealed under the key of the person it concerns, or the
    case's own key when it concerns no one in particular)."""

    event_type: ClassVar[str] = "rj.case.add-note"

    text: Annotated[str, Pii] = Field(min_length=1, max_length=NOTE_MAX_CHARS)
    person_id: str | None = Field(default=None, min_length=1, description="The participant the note concerns, if one")


class RecordSafeContact(Command):
    """Record, with the person's agreement, how they may safely be contacted (DOMAIN "Safe contact"): which
    channels, whether a voicemail may be left, whether letters and visits may go to their home address (no:
    e.g. a home shared with the offender), and optionally a safe alternative address, phone or email. The latest
    record for a person replaces the one before. Everything about it is the person's own data (``Pii``): another
    party must never learn it (DOMAIN rule 3)."""

    event_type: ClassVar[str] = "rj.contact.record-safe-contact"

    person_id: str = Field(min_length=1)
    safe_channels: Annotated[list[Channel], Pii] = Field(max_length=len(Channel), description="Channels safe to use")
    voicemail_ok: Annotated[bool, Pii] = False
    letters_to_home_ok: Annotated[bool, Pii] = Field(
        default=False, description="Whether letters (and visits) may go to the home address"
    )
    alternative_address: Annotated[str | None, Pii] = Field(default=None, min_length=1, max_length=400)
    alternative_phone: Annotated[str | None, Pii] = Field(default=None, min_length=1, max_length=40)
    alternative_email: Annotated[str | None, Pii] = Field(default=None, min_length=1, max_length=320)
    through: RecordedThrough
    method: RecordingMethod
    agreed_at: AwareDatetime | None = Field(
        default=None, description="When the person agreed to it, if earlier than its recording; none means now"
    )


class RecordSurveyResponse(Command):
    """A participant's answer to the satisfaction survey they were invited to (``rj.survey.invited``), once."""

    event_type: ClassVar[str] = "rj.survey.record-response"

    person_id: str = Field(min_length=1)
    satisfied: bool
    score: int = Field(ge=1, le=5, description="1 (not at all satisfied) to 5 (very satisfied)")
    comments: Annotated[str | None, Pii] = Field(default=None, max_length=NOTE_MAX_CHARS)
    responded_at: AwareDatetime | None = Field(default=None, description="When they answered; none means now")


# --- facts --------------------------------------------------------------------------------------


class FacilitatorAssigned(EventData):
    event_type: ClassVar[str] = "rj.facilitator.assigned"

    case_id: str
    facilitator_id: str
    specialist: bool
    assigned_at: AwareDatetime
    assigned_by: Actor
    reason: str | None = None


class PreparationMeetingRecorded(EventData):
    event_type: ClassVar[str] = "rj.preparation-meeting.recorded"

    case_id: str
    person_id: str
    met_at: AwareDatetime
    method: RecordingMethod
    recorded_at: AwareDatetime
    recorded_by: Actor


class RiskAssessmentRecorded(EventData):
    event_type: ClassVar[str] = "rj.risk-assessment.recorded"

    case_id: str
    assessed_at: AwareDatetime
    level: RiskLevel
    safe_to_proceed: bool
    recorded_at: AwareDatetime
    recorded_by: Actor
    reason: Annotated[str | None, Pii] = None
    command_id: str | None = Field(
        default=None,
        description="The command this decides: the services that follow that command in case order match this "
        "verdict to it",
    )


class ConsentGiven(EventData):
    event_type: ClassVar[str] = "rj.consent.given"

    case_id: str
    person_id: str
    purpose: Purpose
    through: RecordedThrough
    method: RecordingMethod
    given_at: AwareDatetime = Field(description="When the person decided")
    given_by: Actor
    recorded_at: AwareDatetime = Field(description="When the decision was recorded")


class ConsentDeclined(EventData):
    """Staff-only: who declined, through whom, and why. Who it was (``person_id``, and ``declined_by`` when they
    declined themself) is under the case's key (``CasePii``): staff and services still read it after the person is
    erased (rule 7 keeps ids), and the case's retention erases it. Why (``reason``, their own words) is under the
    person's key and goes when they are erased (rule 7 keeps nothing but ids and monitoring data). Its token's key
    id, in clear, matches their data's on ``rj.case.opened``: a reader of both staff-only topics could tell who gave
    a reason; see the README's known gaps. Other participants learn only that the process stopped
    (``CaseWithdrawn``, then ``CaseClosed``). Facts written before who it was went under the case's key read
    ``"[erased]"`` there once the person is erased."""

    event_type: ClassVar[str] = "rj.consent.declined"

    case_id: str
    person_id: Annotated[str, CasePii] = Field(description="Who declined: never to be told to other participants")
    purpose: Purpose
    through: RecordedThrough
    method: RecordingMethod
    declined_at: AwareDatetime = Field(description="When the person decided")
    declined_by: Annotated[Actor, CasePii] = Field(description="Who recorded it: the person themself, or staff")
    recorded_at: AwareDatetime = Field(description="When the decision was recorded")
    reason: Annotated[str | None, Pii] = Field(
        default=None, description="Never to be told to another participant; erased with the person"
    )
    command_id: str | None = Field(
        default=None,
        description="The command this decides: the services that follow that command in case order match this "
        "verdict to it",
    )


class ConsentWithdrawn(EventData):
    """Staff-only: who withdrew, through whom, and why; sealed as on ``ConsentDeclined`` (who under the case's key,
    readable after the person is erased; why under theirs, erased with them). Other participants learn only that
    the process stopped (``CaseWithdrawn``, then ``CaseClosed``)."""

    event_type: ClassVar[str] = "rj.consent.withdrawn"

    case_id: str
    person_id: Annotated[str, CasePii] = Field(description="Who withdrew: never to be told to other participants")
    purpose: Purpose
    through: RecordedThrough
    method: RecordingMethod
    withdrawn_at: AwareDatetime = Field(description="When the person decided")
    withdrawn_by: Annotated[Actor, CasePii] = Field(description="Who recorded it: the person themself, or staff")
    recorded_at: AwareDatetime = Field(description="When the decision was recorded")
    reason: Annotated[str | None, Pii] = Field(
        default=None, description="Never to be told to another participant; erased with the person"
    )
    command_id: str | None = Field(
        default=None,
        description="The command this decides: the services that follow that command in case order match this "
        "verdict to it",
    )


class CaseHeld(EventData):
    """Staff-only: the case is on hold for a safeguarding concern. Every pending meeting is called off and no
    one is contacted about the case until it is resumed. The concern and who raised it are personal data."""

    event_type: ClassVar[str] = "rj.case.held"

    case_id: str
    concern: Annotated[str, Pii]
    raised_by: Annotated[str, Pii]
    held_at: AwareDatetime
    held_by: Actor
    command_id: str | None = Field(
        default=None,
        description="The command this decides: the services that follow that command in case order match this "
        "verdict to it",
    )


class CaseResumed(EventData):
    """Staff-only: the hold is lifted. Readiness is re-derived after it (``CaseReadyForMeeting`` when ready again),
    and needs a risk assessment made after the concern was raised."""

    event_type: ClassVar[str] = "rj.case.resumed"

    case_id: str
    resumed_at: AwareDatetime
    resumed_by: Actor
    reason: Annotated[str, Pii]


class ParticipantAdded(EventData):
    """Staff-only: someone now takes part in the case, in a role, for the participant they support. Ids and
    roles only; staff's words on why are personal data."""

    event_type: ClassVar[str] = "rj.participant.added"

    case_id: str
    participant: CaseParticipant
    added_at: AwareDatetime
    added_by: Actor
    reason: Annotated[str | None, Pii] = None
    command_id: str | None = Field(
        default=None,
        description="The command this decides (none when no command added them: an offender who joined): the "
        "services that follow that command in case order match this verdict to it",
    )


class PreparationStarted(EventData):
    """The consent service has taken the accepted case in: facilitators may now act on it."""

    event_type: ClassVar[str] = "rj.preparation.started"

    case_id: str
    participants: list[CaseParticipant]
    specialist_required: bool
    risk_assessment_required: bool
    started_at: AwareDatetime


class CaseReadyForMeeting(EventData):
    """Every required participant consents to take part, risk is assessed where needed, staffing fits."""

    event_type: ClassVar[str] = "rj.case.ready-for-meeting"

    case_id: str
    participants: list[CaseParticipant]
    specialist_required: bool
    facilitator_ids: list[str]
    risk_assessed_at: AwareDatetime | None = None
    ready_at: AwareDatetime
    decided_by: Actor


class CaseReadinessLost(EventData):
    """A ready case is no longer ready without being withdrawn (a re-assessment found it unsafe)."""

    event_type: ClassVar[str] = "rj.case.readiness-lost"

    case_id: str
    reason: str
    lost_at: AwareDatetime
    decided_by: Actor


class CaseWithdrawn(EventData):
    """The case cannot proceed: a required participant declined or withdrew their participation.

    ``consent_withdrawn`` also when someone who had consented to take part then declines: that is a withdrawal.

    Participant-facing: what everyone on the case may be told, that the process has stopped and the general
    reason, never who or why (DOMAIN rule 2). Who and why are in the staff-only ``ConsentWithdrawn`` /
    ``ConsentDeclined`` just before it. Its envelope has no ``causationid`` and its ``correlationid`` is the
    case id, so no chain leads from it to the withdrawal command or to those facts; its id is still derived
    from the case (``case-withdrawn``), so a replay yields the same event.

    v2: v1 also named the person (``person_id``) and had the command's actor as ``recorded_by`` (the person,
    when they withdrew themself); v2 names no one, and the decision is the consent service's (``decided_by``).
    ``case_withdrawn_v1_to_v2`` reads v1."""

    event_type: ClassVar[str] = "rj.case.withdrawn"
    version: ClassVar[int] = 2
    participant_facing: ClassVar[bool] = True

    case_id: str
    reason: CaseWithdrawalReason
    withdrawn_at: AwareDatetime
    decided_by: Actor = Field(description="The consent service, never the person whose decision it was")


def case_withdrawn_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """A v1 ``CaseWithdrawn`` as v2: who it was is dropped, and the decision is the consent service's."""
    v2 = {name: value for name, value in data.items() if name not in ("person_id", "recorded_by")}
    return {**v2, "decided_by": SYSTEM_CONSENT.model_dump(mode="json")}


class ContactAttemptRecorded(EventData):
    """One attempt to contact a participant. ``unanswered_in_a_row`` counts this person's unanswered attempts
    since they were last reached (by when each was made), this one included, as the log stands once this one is
    in it: 0 when this one is the latest to reach them, but a "reached" recorded late, before unanswered attempts
    made after it, leaves the count where it was. Closing a case as ``uncontactable`` needs a required participant
    whose count reached the ``uncontactable_after_attempts`` setting.

    Staff-only. ``breached_safe_contact`` says whether the attempt broke the person's safe-contact record (a
    safeguarding breach staff must see, rule 6) and ``safe_contact_breach`` what it broke (a ``SafeContactBreach``
    code, ``none`` when nothing): both are always present and sealed, since either in clear (or its absence) beside
    ``method`` would say what ``rj.contact.safe-contact-recorded`` seals (rule 3). Sealed under the case's key
    (``CasePii``), so the record of a breach outlives the person's erasure (the case's retention erases it), and at
    one length whatever the outcome: the code is padded to a fixed width, and ``true`` and ``false`` seal to tokens
    of the same length (base64 rounds their 32 and 33 bytes alike). v1 wrote the detail as free text under the
    person's key; it reads as its code (``SafeContactBreach.unknown`` once erased)."""

    event_type: ClassVar[str] = "rj.contact.attempt-recorded"

    case_id: str
    person_id: str
    attempted_at: AwareDatetime
    method: ContactMethod
    outcome: ContactOutcome
    unanswered_in_a_row: int = Field(ge=0)
    recorded_at: AwareDatetime
    recorded_by: Actor
    note: Annotated[str | None, Pii] = None
    command_id: str | None = None
    breached_safe_contact: Annotated[bool, CasePii] = False
    safe_contact_breach: Annotated[SafeContactBreachCode, CasePii] = SafeContactBreach.none


class CaseNoteAdded(EventData):
    """Staff-only: a facilitator's case note. The text is sealed under the key of the person it concerns
    (``person_id``), else under the case's own key."""

    event_type: ClassVar[str] = "rj.case.note-added"

    case_id: str
    note_id: str = Field(description="The id of the command that added it")
    person_id: str | None = None
    text: Annotated[str, Pii]
    added_at: AwareDatetime
    added_by: Actor


class SafeContactRecorded(EventData):
    """Staff-only: how ``person_id`` may safely be contacted, replacing any earlier record for them. Every detail
    is sealed under their own key (DOMAIN rule 3); only who it is about and how it was agreed are in clear. Every
    service that contacts people is to respect it; the consent service flags (sealed) a recorded contact attempt
    that broke it."""

    event_type: ClassVar[str] = "rj.contact.safe-contact-recorded"

    case_id: str
    person_id: str
    safe_channels: Annotated[list[Channel], Pii]
    voicemail_ok: Annotated[bool, Pii]
    letters_to_home_ok: Annotated[bool, Pii]
    alternative_address: Annotated[str | None, Pii] = None
    alternative_phone: Annotated[str | None, Pii] = None
    alternative_email: Annotated[str | None, Pii] = None
    through: RecordedThrough
    method: RecordingMethod
    agreed_at: AwareDatetime
    recorded_at: AwareDatetime
    recorded_by: Actor
    command_id: str | None = None


class SurveyInvited(EventData):
    """Staff-only: after the case closed, ``person_id`` is to be invited to the satisfaction survey (the notify
    service sends it). Only participants who did not withdraw or decline are invited, and no one on a case that
    closed withdrawn or declined (DOMAIN rule 2). Staff-only because who is invited says who did not withdraw."""

    event_type: ClassVar[str] = "rj.survey.invited"

    case_id: str
    person_id: str
    role: Role
    closure_reason: ClosureReason
    invited_at: AwareDatetime
    invited_by: Actor


class SurveyResponseRecorded(EventData):
    """A participant's survey answer: satisfied or not and a 1 to 5 score (in clear, for the service's figures),
    and their own words (sealed under their key)."""

    event_type: ClassVar[str] = "rj.survey.response-recorded"

    case_id: str
    person_id: str
    role: Role
    satisfied: bool
    score: int = Field(ge=1, le=5)
    comments: Annotated[str | None, Pii] = None
    responded_at: AwareDatetime
    recorded_at: AwareDatetime
    recorded_by: Actor
    command_id: str | None = None


class DecideErasuresDue(Command):
    """The consent service to itself (actor: the consent service): the grace period after someone's decline
    (``declined_erasure_delay_s``) may have run on this case. Read in case order like any command, so a consent
    given before it is heard first; whether the erasure is due is decided then (``rj.participant.erasure-due``).
    Sent again, or when nothing is due any more, it does nothing."""

    event_type: ClassVar[str] = "rj.consent.erasures-due"


class ParticipantErasureDue(EventData):
    """Rule 7: someone who declined or withdrew from taking part did not consent again within the grace period
    after their decline (``declined_erasure_delay_s``), open case or closed: their personal data on the case is to
    be erased (the privacy service destroys their key there, keeping ids and monitoring data; a retention hold
    defers it until lifted). Decided by the consent service, in case order; from then on it refuses any command
    about them on this case (their data is gone; a victim or offender takes part again only through a new referral,
    anyone else staff add again under a new person id). A decline made before the consent service kept pending
    erasures has a ``decline_id`` derived from the person and ``declined_by`` the consent service's
    ``consent-service:decliner-not-recorded``: neither was kept then. Who it is and who
    recorded the decline are sealed under the case's key, as on the decline."""

    event_type: ClassVar[str] = "rj.participant.erasure-due"

    case_id: str
    person_id: Annotated[str, CasePii] = Field(description="Who declined (under the case's key)")
    decline_id: str = Field(
        description="The id of the rj.consent.declined or rj.consent.withdrawn fact (purpose 'participation')"
    )
    declined_at: AwareDatetime = Field(description="When the person decided")
    declined_by: Annotated[Actor, CasePii] = Field(description="Who recorded the decline: the person, or staff")
    recorded_at: AwareDatetime = Field(description="When the decline was recorded: the grace period runs from it")
    due_at: AwareDatetime
    decided_at: AwareDatetime
    decided_by: Actor


CONSENT_EVENTS: tuple[type[EventData], ...] = (
    PreparationStarted,
    FacilitatorAssigned,
    PreparationMeetingRecorded,
    RiskAssessmentRecorded,
    ConsentGiven,
    ConsentDeclined,
    ConsentWithdrawn,
    CaseReadyForMeeting,
    CaseReadinessLost,
    CaseWithdrawn,
    CaseHeld,
    CaseResumed,
    ParticipantAdded,
    ContactAttemptRecorded,
    CaseNoteAdded,
    SafeContactRecorded,
    SurveyInvited,
    SurveyResponseRecorded,
    ParticipantErasureDue,
)

CONSENT_COMMANDS: tuple[type[EventData], ...] = (
    AssignFacilitator,
    RecordPreparationMeeting,
    RecordRiskAssessment,
    GiveConsent,
    DeclineConsent,
    WithdrawConsent,
    PutCaseOnHold,
    ResumeCase,
    AddParticipant,
    RecordContactAttempt,
    AddCaseNote,
    RecordSafeContact,
    RecordSurveyResponse,
    DecideErasuresDue,
)
