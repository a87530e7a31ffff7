"""Who is told what, and when: the notify service's decisions, pure (no I/O).

``decide(case, event)`` turns one event (a fact from referral, consent, scheduling, privacy or the API; a
withdrawal, decline or hold command read from ``rj.commands``; notify's own preferences command) and notify's
state of the case into a ``Decision``: the new state, messages to schedule (``Intent``), messages waiting to be
cancelled (``Cancel``, applied by the store to the case's waiting sends), and facts (``Emit``).

The rules, each a function below:

- **Who is told what** (issue 19): the victim's RJ information under the Victims' Code clock (on a sensitive case
  only once a risk assessment finds it safe to proceed: ``victim_information_due``); a facilitator's assignment;
  every withdrawal or hold, at once, to the case's facilitators; each attendee's meeting, its changes and a
  reminder ``Policy.meeting_reminder`` before it; an agreement item's reminder to its owner; an unmet item to
  the people the fact names (never who owed it); an approved indirect item to its recipient when released; the
  closure notice to every participant; the survey invitation.
- **A stop is at once** (DOMAIN rule 2): a withdrawal or decline of participation, or a hold, read as a
  *command* on ``rj.commands`` in case order, stops the case before consent's fact can come: every message
  waiting on the case but the closure notice is cancelled, and nothing new goes to a participant but the closure
  notice (and, on the facts, the notices of the stop itself). If consent rejects the command, the stop is
  lifted; what was cancelled stays cancelled, and the facilitator is told so.
- **After a withdrawal** the others are told only that the process has stopped (``process_stopped``: names no
  one), the person who withdrew that we have stopped, the facilitators at once who and when (staff may know).
  Nothing more goes to anyone on the case but the closure notice; the survey goes only to those who did not
  withdraw, and to no one on a withdrawn case.
- **Channels**: the person's preferred channel if their safe-contact record allows it, else the next it allows
  in email > sms > letter, never one it forbids (``choose_channel``); none: the message is not sent, it fails as
  ``no_safe_channel`` and the facilitator is told.
- **Quiet hours**: a participant's message (and a member of staff's that is not urgent) waits for the next
  opening of their hours (``services.notify.quiet_hours``); urgent staff messages go at once.
- **Ids are derived** (``notification_id``) from the cause, the kind, the recipient and the attempt, so a replay
  decides the same ids and the store inserts nothing new.

What a message says is decided when it is sent (``services.notify.sender``), from this state as it is then: an
address rectified or erased meanwhile is the one used (or none).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Annotated, Any

from schemas.commands import CommandRejected
from schemas.common import Channel, Contact
from schemas.consent import (
    PARTICIPATION,
    CaseHeld,
    CaseResumed,
    CaseWithdrawn,
    ConsentDeclined,
    ConsentGiven,
    ConsentWithdrawn,
    DeclineConsent,
    FacilitatorAssigned,
    ParticipantAdded,
    PutCaseOnHold,
    RiskAssessmentRecorded,
    SafeContactRecorded,
    SurveyInvited,
    WithdrawConsent,
)
from schemas.envelope import EventData
from schemas.indirect import IndirectItemReleased
from schemas.links import ParticipantLinksChanged
from schemas.notify import (
    CancelReason,
    MessageFormat,
    MessageLanguage,
    NotificationKind,
    NotifyPreferencesRecorded,
    RecipientKind,
    SetNotifyPreferences,
)
from schemas.pii import CasePii, Pii
from schemas.privacy import CaseRetentionErased, DeclinedParticipantErased, ParticipantRectified, PersonErased
from schemas.referral import CaseAccepted, CaseOpened, OffenderJoined, Participant, VictimInformationDue
from schemas.scheduling import (
    AgreementItemCompleted,
    AgreementItemDueSoon,
    AgreementItemOverdue,
    CancellationReason,
    CaseClosed,
    MeetingAttendeeRemoved,
    MeetingBooked,
    MeetingCancelled,
    MeetingRescheduled,
)
from services.notify.quiet_hours import next_allowed, opening_hours
from services.runtime.decision import Emit, JsonState, rejection

Kind = NotificationKind

# --- what may go when -------------------------------------------------------------------------------

STOP_NOTICES: frozenset[Kind] = frozenset({Kind.process_stopped, Kind.withdrawal_confirmed})
"""What tells participants of the stop itself: the only participant messages besides the closure notice that a
stopped case sends."""

AFTER_A_STOP: frozenset[Kind] = frozenset({Kind.closure, *STOP_NOTICES})
"""Every participant message that may go on a stopped case (withdrawn, on hold, or a stop awaiting its verdict)."""

KEPT_ON_A_STOP: frozenset[Kind] = AFTER_A_STOP
"""What a stop, and the closure after it, leave waiting: the closure notice, and the notices of the stop itself
(the others' ``process_stopped``, the withdrawing person's confirmation), which consent's rj.case.withdrawn and
staff's closure follow within moments and must not take back."""

STAFF_KINDS: frozenset[Kind] = frozenset(
    {Kind.facilitator_assigned, Kind.facilitator_withdrawal, Kind.facilitator_hold, Kind.facilitator_delivery_problem}
)

CHANNEL_ORDER: tuple[Channel, ...] = (Channel.email, Channel.sms, Channel.letter)
"""Which channel goes next when the preferred one is not allowed (or failed for good). Calls are not automated."""

COORDINATOR = "coordinator"
"""The staff recipient id of the hub's coordinators' mailbox (``NOTIFY_COORDINATOR_EMAIL``): told of delivery
problems no facilitator is there to hear of."""

_ID_NS = uuid.UUID("6f1d0c52-9a3e-4b7f-8d21-3c5e7a9b1f04")


def notification_id(cause_event_id: str, kind: Kind, recipient_id: str, attempt: int = 1) -> str:
    """The id of the message of ``kind`` to ``recipient_id`` decided on ``cause_event_id``, on its ``attempt``-th
    channel: the same on every replay, so the store and the provider (its ``reference``) see one message."""
    return str(uuid.uuid5(_ID_NS, f"{cause_event_id}|{kind.value}|{recipient_id}|{attempt}"))


# --- the state of a case --------------------------------------------------------------------------


@dataclass(frozen=True)
class SafeChannels:
    """A person's latest safe-contact record, as far as sending goes (``rj.contact.safe-contact-recorded``)."""

    safe_channels: tuple[Channel, ...]
    letters_to_home_ok: bool
    alternative_address: str | None = None
    alternative_phone: str | None = None
    alternative_email: str | None = None


@dataclass(frozen=True)
class Person:
    """A participant as notify knows them. Every detail of theirs is sealed under their own key on the case, so
    erasing them shreds it here too."""

    person_id: str
    role: str
    required: bool = False
    name: Annotated[str | None, Pii] = None
    contact: Annotated[Contact | None, Pii] = None
    preferred_channel: Channel | None = None
    safe: Annotated[SafeChannels | None, Pii] = None
    language: Annotated[MessageLanguage, Pii] = MessageLanguage.en
    format: Annotated[MessageFormat, Pii] = MessageFormat.standard
    quiet_hours: Annotated[str | None, Pii] = None
    withdrew: Annotated[bool, CasePii] = False  # staff-only: never told to anyone else
    erased: bool = False


@dataclass(frozen=True)
class PendingStop:
    """A withdrawal, decline or hold read from ``rj.commands``, awaiting consent's verdict."""

    command_id: str
    kind: str  # "withdrawal" | "hold"
    person_id: Annotated[str | None, CasePii] = None  # who withdrew: staff-only


@dataclass(frozen=True)
class Withdrawal:
    """A withdrawal or decline of participation, as consent decided it: who (staff-only) and when."""

    event_id: str
    person_id: Annotated[str, CasePii]
    role: Annotated[str, CasePii]
    declined: bool
    at: datetime


@dataclass(frozen=True)
class MeetingNote:
    meeting_id: str
    attendee_ids: tuple[str, ...]
    starts_at: datetime


@dataclass(frozen=True)
class NotifyCase(JsonState):
    case_id: str
    force: str | None = None
    crime_reference: str | None = None
    people: tuple[Person, ...] = ()
    facilitator_ids: tuple[str, ...] = ()  # assigned, the latest last
    accepted: bool = False  # rj.case.accepted: who is on it and whether it is sensitive are known
    sensitive: bool = False  # needs a risk assessment before any contact (rj.case.accepted)
    safe_to_proceed: bool = False  # the latest risk assessment, by when it was made
    assessed_at: datetime | None = None
    victim_information_waiting: tuple[tuple[str, str], ...] = ()  # (person_id, cause event id) until it is safe
    links_enabled: bool | None = None  # staff's switch (rj.participant-links.changed); None: the default
    stops_pending: tuple[PendingStop, ...] = ()
    persons_pending: tuple[PendingStop, ...] = ()  # a withdrawal by someone who cannot stop the case
    answered: tuple[str, ...] = ()  # verdicts that came before their command (the latest few)
    held: bool = False
    stopped_by_withdrawal: bool = False  # a participant who could stop it withdrew: consent's verdict follows
    withdrawn: bool = False  # consent said so (rj.case.withdrawn): the others have been told
    closed: bool = False
    withdrawals: tuple[Withdrawal, ...] = ()
    meetings: tuple[MeetingNote, ...] = ()

    def person(self, person_id: str) -> Person | None:
        return next((p for p in self.people if p.person_id == person_id), None)

    @property
    def stopped(self) -> bool:
        """Nothing but the closure notice (and the stop's own notices) goes to a participant."""
        return self.withdrawn or self.stopped_by_withdrawal or self.held or bool(self.stops_pending)

    def silenced(self, person_id: str) -> bool:
        """This person has withdrawn or declined (or it awaits its verdict): nothing more goes to them but the
        closure notice and their confirmation."""
        person = self.person(person_id)
        return (person is not None and person.withdrew) or any(s.person_id == person_id for s in self.persons_pending)

    @property
    def links_allowed(self) -> bool:
        """Whether participants' messages carry their withdraw link: not on a sensitive case unless staff turned
        links on; staff may turn them off on any case."""
        return self.links_enabled if self.links_enabled is not None else not self.sensitive

    def with_person(self, person: Person) -> NotifyCase:
        others = tuple(p for p in self.people if p.person_id != person.person_id)
        return replace(self, people=(*others, person))


ANSWERED_KEPT = 256
"""Verdicts remembered until their command is read (see ``services.scheduling.domain.model.ANSWERED_KEPT``)."""


@dataclass(frozen=True)
class Policy:
    """The settings the decisions depend on (``services.runtime.settings``)."""

    quiet_hours: str | None = None  # NOTIFY_QUIET_HOURS; None: the default hours
    meeting_reminder: timedelta = timedelta(hours=48)


DEFAULT_POLICY = Policy()


# --- what a decision returns ------------------------------------------------------------------------


@dataclass(frozen=True)
class Intent:
    """A message to schedule: ``channel`` None means no channel is safe (it fails, and the facilitator is
    told). ``about`` names what it concerns (``meeting:M1``, ``item:I1``) for cancellations; ``facts`` what its
    context is built from when it is sent (ids, times, kinds: never anyone's personal data)."""

    notification_id: str
    recipient_id: str
    recipient_kind: RecipientKind
    kind: Kind
    channel: Channel | None
    due_at: datetime
    urgent: bool
    cause_event_id: str
    about: str | None = None
    attempt: int = 1
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Cancel:
    """Cancel what waits on the case and matches: every field given must match; ``keep`` kinds stay."""

    reason: CancelReason
    recipient_id: str | None = None
    about: str | None = None
    kinds: frozenset[Kind] | None = None
    keep: frozenset[Kind] = frozenset()
    participants_only: bool = False

    def matches(self, *, recipient_id: str, recipient_kind: RecipientKind, kind: Kind, about: str | None) -> bool:
        return (
            kind not in self.keep
            and (self.kinds is None or kind in self.kinds)
            and (self.recipient_id is None or recipient_id == self.recipient_id)
            and (self.about is None or about == self.about)
            and (not self.participants_only or recipient_kind is RecipientKind.participant)
        )


@dataclass
class Decision:
    case: NotifyCase | None
    intents: list[Intent] = field(default_factory=list)
    cancels: list[Cancel] = field(default_factory=list)
    emits: list[Emit] = field(default_factory=list)


# --- channels and timing ------------------------------------------------------------------------------


def address_for(person: Person, channel: Channel) -> str | None:
    """Where ``channel`` reaches ``person`` safely, or None. A safe alternative on their record comes first; a
    letter goes home only if their record says home is safe. No record: nothing is known to be unsafe."""
    if person.erased or channel is Channel.phone:
        return None
    contact = person.contact or Contact()
    safe = person.safe
    if safe is not None and channel not in safe.safe_channels:
        return None
    if channel is Channel.email:
        return (safe.alternative_email if safe else None) or contact.email
    if channel is Channel.sms:
        return (safe.alternative_phone if safe else None) or contact.phone
    if safe is not None:
        return safe.alternative_address or (contact.address if safe.letters_to_home_ok else None)
    return contact.address


def choose_channel(person: Person | None, *, excluding: Iterable[Channel] = ()) -> Channel | None:
    """The person's preferred channel if it reaches them safely, else the first that does in email > sms >
    letter; none of ``excluding`` (channels that already failed for good)."""
    if person is None:
        return None
    tried = set(excluding)
    order = [person.preferred_channel] if person.preferred_channel in CHANNEL_ORDER else []
    order += [c for c in CHANNEL_ORDER if c not in order]
    return next((c for c in order if c is not None and c not in tried and address_for(person, c)), None)


def due_for(person: Person | None, moment: datetime, policy: Policy) -> datetime:
    """When a message due at ``moment`` may reach the person: their hours, else the service's."""
    own = person.quiet_hours if person is not None else None
    return next_allowed(moment, opening_hours(own or policy.quiet_hours))


# --- building intents ------------------------------------------------------------------------------


@dataclass
class _Out:
    """Collects one decision's intents, holding each to what the case's state allows."""

    case: NotifyCase
    cause: str
    now: datetime
    policy: Policy
    decision: Decision

    def participant(
        self,
        kind: Kind,
        person_id: str,
        *,
        at: datetime | None = None,
        about: str | None = None,
        facts: dict[str, Any] | None = None,
    ) -> None:
        if not participant_may_receive(self.case, kind, person_id):
            return
        person = self.case.person(person_id)
        self.decision.intents.append(
            Intent(
                notification_id=notification_id(self.cause, kind, person_id),
                recipient_id=person_id,
                recipient_kind=RecipientKind.participant,
                kind=kind,
                channel=choose_channel(person),
                due_at=due_for(person, max(at or self.now, self.now), self.policy),
                urgent=False,
                cause_event_id=self.cause,
                about=about,
                facts=facts or {},
            )
        )

    def staff(self, kind: Kind, *, urgent: bool, facts: dict[str, Any] | None = None) -> None:
        """To every facilitator assigned to the case (none assigned: no one to tell, which ``facilitators`` on
        the case being empty shows staff in the console)."""
        for facilitator_id in self.case.facilitator_ids:
            self.to_facilitator(kind, facilitator_id, urgent=urgent, facts=facts)

    def to_facilitator(
        self, kind: Kind, facilitator_id: str, *, urgent: bool, facts: dict[str, Any] | None = None
    ) -> None:
        due = self.now if urgent else next_allowed(self.now, opening_hours(self.policy.quiet_hours))
        self.decision.intents.append(
            Intent(
                notification_id=notification_id(self.cause, kind, facilitator_id),
                recipient_id=facilitator_id,
                recipient_kind=RecipientKind.staff,
                kind=kind,
                channel=Channel.email,
                due_at=due,
                urgent=urgent,
                cause_event_id=self.cause,
                facts=facts or {},
            )
        )


def participant_may_receive(case: NotifyCase, kind: Kind, person_id: str) -> bool:
    """Whether a message of ``kind`` may be decided for ``person_id`` on ``case`` now (DOMAIN rules 2 and 5)."""
    person = case.person(person_id)
    if person is not None and person.erased:
        return False
    if kind is Kind.closure:
        return True
    if kind is Kind.withdrawal_confirmed:
        return True
    if case.silenced(person_id):
        return False
    if kind is Kind.process_stopped:
        return True
    if kind is Kind.survey_invitation:
        return not case.withdrawn and not case.stopped_by_withdrawal and not case.held and not case.stops_pending
    return not case.stopped and not case.closed


def stop_reason(
    case: NotifyCase | None, kind: Kind, recipient_kind: RecipientKind, person_id: str
) -> CancelReason | None:
    """Why a participant's message decided earlier may no longer go now (None: it may), asked by the sender just
    before the channel is called and again before a temporary failure waits to retry: a stop processed while it
    was claimed, sending or in doubt cancels it as a stop cancels what waits. Staff messages always go."""
    if case is None or recipient_kind is RecipientKind.staff or participant_may_receive(case, kind, person_id):
        return None
    person = case.person(person_id)
    if person is not None and person.erased:
        return CancelReason.erased
    if case.withdrawn or case.stopped_by_withdrawal or case.silenced(person_id):
        return CancelReason.withdrawn
    if case.held or any(s.kind == "hold" for s in case.stops_pending):
        return CancelReason.held
    if case.stops_pending:
        return CancelReason.withdrawn
    return CancelReason.case_closed


# --- the handlers -----------------------------------------------------------------------------------

Handler = Callable[[NotifyCase, Any, _Out], NotifyCase]


def _person_of(participant: Participant) -> Person:
    return Person(
        person_id=participant.person_id,
        role=participant.role.value,
        required=participant.required,
        name=participant.name,
        contact=participant.contact,
        preferred_channel=participant.preferred_channel,
    )


def case_opened(case: NotifyCase, event: CaseOpened, out: _Out) -> NotifyCase:
    """Who is on the case and how to reach them (sealed at rest, opened only to send)."""
    known = {p.person_id: p for p in case.people}
    people = []
    for participant in event.participants:
        fresh = _person_of(participant)
        before = known.pop(participant.person_id, None)
        people.append(_kept_choices(fresh, before))
    return replace(
        case,
        force=event.force or case.force,
        crime_reference=event.crime_reference,
        people=(*known.values(), *people),
    )


def _kept_choices(fresh: Person, before: Person | None) -> Person:
    """A person's details as upstream sends them, with what they told us since (safe contact, preferences)."""
    if before is None:
        return fresh
    return replace(
        fresh,
        safe=before.safe,
        language=before.language,
        format=before.format,
        quiet_hours=before.quiet_hours,
        withdrew=before.withdrew,
        erased=before.erased,
        required=fresh.required or before.required,
    )


def offender_joined(case: NotifyCase, event: OffenderJoined, out: _Out) -> NotifyCase:
    case = case.with_person(_kept_choices(_person_of(event.details), case.person(event.details.person_id)))
    return _with_stops_they_can_make(case, event.details.person_id, out)


def participant_added(case: NotifyCase, event: ParticipantAdded, out: _Out) -> NotifyCase:
    """Someone around a participant (a supporter, a parent or guardian): known by id and role; their contact
    details reach us only by rectification."""
    p = event.participant
    before = case.person(p.person_id)
    if before is not None:
        case = case.with_person(replace(before, role=p.role.value, required=p.required or before.required))
    else:
        case = case.with_person(Person(person_id=p.person_id, role=p.role.value, required=p.required))
    return _with_stops_they_can_make(case, p.person_id, out)


def _with_stops_they_can_make(case: NotifyCase, person_id: str, out: _Out) -> NotifyCase:
    """Someone who joined the case after it was accepted (a second offender, a parent or guardian) and whose
    withdrawal, read earlier, awaits consent's verdict as one that stopped only their own messages: if they can
    stop the case, it stops now, as if the command were read today."""
    if not _could_stop(case, person_id):
        return case
    theirs = tuple(s for s in case.persons_pending if s.person_id == person_id and s.kind == "withdrawal")
    if not theirs:
        return case
    case = replace(
        case,
        persons_pending=tuple(s for s in case.persons_pending if s not in theirs),
        stops_pending=(*case.stops_pending, *theirs),
    )
    out.case = case
    _stop_at_once(case, out, CancelReason.withdrawn)
    return case


def case_accepted(case: NotifyCase, event: CaseAccepted, out: _Out) -> NotifyCase:
    sensitive = event.risk_assessment_required or event.specialist_required or bool(event.sensitivity_reasons)
    required = {p.person_id for p in event.participants if p.required}
    people = tuple(replace(p, required=True) if p.person_id in required else p for p in case.people)
    case = replace(case, accepted=True, sensitive=sensitive, people=people, crime_reference=event.crime_reference)
    case = _without_stops_that_cannot_stop(case)
    if not sensitive:
        case = _release_victim_information(case, out)
    return case


def _release_victim_information(case: NotifyCase, out: _Out) -> NotifyCase:
    """What waited for the case to be accepted (or found safe) goes now, each decided on the event that made it
    due, so a replay of either yields the same message."""
    waiting, case = case.victim_information_waiting, replace(case, victim_information_waiting=())
    out.case = case
    for person_id, cause in waiting:
        inner = _Out(case, cause, out.now, out.policy, out.decision)
        inner.participant(Kind.victim_information, person_id)
    return case


def victim_information_due(case: NotifyCase, event: VictimInformationDue, out: _Out) -> NotifyCase:
    """The victim's RJ information (Victims' Code): now, within their hours. Until the case is accepted (the clock
    starts when the crime is recorded, before any case opens: whether it is sensitive is not known yet), and on a
    sensitive case until a risk assessment finds contact safe, it waits in the state."""
    facts = {"due_by": event.due_by.isoformat(), "enhanced_rights": event.enhanced_rights}
    if not case.accepted or (case.sensitive and not case.safe_to_proceed):
        waiting = (*case.victim_information_waiting, (event.person_id, out.cause))
        return replace(case, victim_information_waiting=tuple(dict.fromkeys(waiting)))
    out.participant(Kind.victim_information, event.person_id, facts=facts)
    return case


def risk_assessed(case: NotifyCase, event: RiskAssessmentRecorded, out: _Out) -> NotifyCase:
    if case.assessed_at is not None and event.assessed_at < case.assessed_at:
        return case  # an older assessment recorded late: the latest stands
    case = replace(case, safe_to_proceed=event.safe_to_proceed, assessed_at=event.assessed_at)
    if not event.safe_to_proceed or not case.victim_information_waiting:
        return case
    if not case.accepted:
        return case
    return _release_victim_information(case, out)


def facilitator_assigned(case: NotifyCase, event: FacilitatorAssigned, out: _Out) -> NotifyCase:
    ids = (*(f for f in case.facilitator_ids if f != event.facilitator_id), event.facilitator_id)
    case = replace(case, facilitator_ids=ids)
    out.case = case
    out.to_facilitator(Kind.facilitator_assigned, event.facilitator_id, urgent=False)
    return case


def links_changed(case: NotifyCase, event: ParticipantLinksChanged, out: _Out) -> NotifyCase:
    return replace(case, links_enabled=event.enabled)


def safe_contact_recorded(case: NotifyCase, event: SafeContactRecorded, out: _Out) -> NotifyCase:
    person = case.person(event.person_id) or Person(person_id=event.person_id, role="unknown")
    safe = SafeChannels(
        safe_channels=tuple(sorted(set(event.safe_channels))),
        letters_to_home_ok=event.letters_to_home_ok,
        alternative_address=event.alternative_address,
        alternative_phone=event.alternative_phone,
        alternative_email=event.alternative_email,
    )
    return case.with_person(replace(person, safe=safe))


def preferences_recorded(case: NotifyCase, event: NotifyPreferencesRecorded, out: _Out) -> NotifyCase:
    person = case.person(event.person_id)
    if person is None:
        return case
    return case.with_person(
        replace(person, language=event.language, format=event.format, quiet_hours=event.quiet_hours)
    )


def set_preferences(case: NotifyCase, command: SetNotifyPreferences, out: _Out) -> NotifyCase:
    """Notify's own command: refused for someone not on the case; else recorded (and applied)."""
    if case.person(command.person_id) is None:
        out.decision.emits.append(
            rejection("notify", command, out.cause, f"{command.person_id} is not a participant in this case", out.now)
        )
        return case
    fact = NotifyPreferencesRecorded(
        case_id=command.case_id,
        person_id=command.person_id,
        language=command.language,
        format=command.format,
        quiet_hours=command.quiet_hours,
        recorded_at=out.now,
        recorded_by=command.actor,
        command_id=out.cause,
    )
    out.decision.emits.append(Emit(fact, f"preferences-recorded:{out.cause}"))
    return preferences_recorded(case, fact, out)


# --- stops: withdrawal, decline, hold -----------------------------------------------------------------


def _stop_at_once(case: NotifyCase, out: _Out, reason: CancelReason) -> None:
    out.decision.cancels.append(Cancel(reason, keep=KEPT_ON_A_STOP, participants_only=True))


def _could_stop(case: NotifyCase, person_id: str) -> bool:
    """Whether this person's withdrawal can stop the case: a required participant, or anyone while we do not know
    yet who is on it. Once the case is accepted (its participants known), a withdrawal by someone not on it stops
    only their own messages: else a mistaken or hostile command naming a stranger would take back every message of
    the case, the victim's information among them, for good (consent refuses it, but what a stop cancelled stays
    cancelled). Consent's rj.case.withdrawn still stops the case if that person turns out to be one who can."""
    person = case.person(person_id)
    if person is None:
        return not case.accepted
    return person.required or person.role == "unknown"


def _without_stops_that_cannot_stop(case: NotifyCase) -> NotifyCase:
    """Once the case is accepted (who is on it known), a withdrawal read before that stops the case only if its
    person can (``_could_stop``); one that cannot holds back only that person's messages until consent's verdict.
    Else a withdrawal naming a stranger, read before the case (a command overtaking the referral's facts), would
    keep the victim's information from them until consent refused it, and what the stop kept back never went."""
    kept = tuple(
        s for s in case.stops_pending if s.kind != "withdrawal" or s.person_id is None or _could_stop(case, s.person_id)
    )
    if kept == case.stops_pending:
        return case
    moved = tuple(s for s in case.stops_pending if s not in kept)
    return replace(case, stops_pending=kept, persons_pending=(*case.persons_pending, *moved))


def withdrawal_command(case: NotifyCase, command: WithdrawConsent | DeclineConsent, out: _Out) -> NotifyCase:
    """Read in case order: stops the case (or the person) before consent's fact, unless the verdict came first."""
    if command.purpose != PARTICIPATION or case.closed:
        return case
    if out.cause in case.answered:
        return replace(case, answered=tuple(a for a in case.answered if a != out.cause))
    stop = PendingStop(out.cause, "withdrawal", command.person_id)
    if not _could_stop(case, command.person_id):
        out.decision.cancels.append(Cancel(CancelReason.withdrawn, recipient_id=command.person_id, keep=KEPT_ON_A_STOP))
        return replace(case, persons_pending=(*case.persons_pending, stop))
    _stop_at_once(case, out, CancelReason.withdrawn)
    return replace(case, stops_pending=(*case.stops_pending, stop))


def hold_command(case: NotifyCase, command: PutCaseOnHold, out: _Out) -> NotifyCase:
    if case.closed:
        return case
    if out.cause in case.answered:
        return replace(case, answered=tuple(a for a in case.answered if a != out.cause))
    _stop_at_once(case, out, CancelReason.held)
    return replace(case, stops_pending=(*case.stops_pending, PendingStop(out.cause, "hold")))


def _answer(case: NotifyCase, command_id: str | None) -> tuple[NotifyCase, PendingStop | None]:
    """Consent's verdict on ``command_id``: no longer pending (or remembered, if its command is still unread)."""
    if command_id is None:
        return case, None
    found = next((s for s in case.stops_pending if s.command_id == command_id), None)
    if found is not None:
        return replace(case, stops_pending=tuple(s for s in case.stops_pending if s is not found)), found
    found = next((s for s in case.persons_pending if s.command_id == command_id), None)
    if found is not None:
        return replace(case, persons_pending=tuple(s for s in case.persons_pending if s is not found)), found
    if command_id in case.answered:
        return case, None
    return replace(case, answered=(*case.answered, command_id)[-ANSWERED_KEPT:]), None


def command_rejected(case: NotifyCase, event: CommandRejected, out: _Out) -> NotifyCase:
    """Consent refused a withdrawal, decline or hold we stopped on: the stop is lifted. What it cancelled stays
    cancelled (a replay of the past is not ours to decide), and the facilitators are told so."""
    if event.command_type not in FOLLOWED_COMMANDS:
        return case
    case, lifted = _answer(case, event.command_id)
    if lifted is None:
        return case
    out.case = case
    told = Kind.facilitator_hold if lifted.kind == "hold" else Kind.facilitator_withdrawal
    out.staff(told, urgent=True, facts={"lifted": True})
    return case


def consent_withdrawn_or_declined(case: NotifyCase, event: ConsentWithdrawn | ConsentDeclined, out: _Out) -> NotifyCase:
    """Who withdrew or declined their participation: they are told we have stopped, the facilitators at once.
    Whether the case stops is ``case_withdrawn``'s (consent says so next, for a required participant)."""
    if event.purpose != PARTICIPATION:
        return case
    case, _ = _answer(case, event.command_id)
    declined = isinstance(event, ConsentDeclined)
    at = event.declined_at if isinstance(event, ConsentDeclined) else event.withdrawn_at
    person = case.person(event.person_id) or Person(person_id=event.person_id, role="unknown")
    withdrawal = Withdrawal(out.cause, event.person_id, person.role, declined, at)
    case = replace(
        case.with_person(replace(person, withdrew=True)),
        withdrawals=(*case.withdrawals, withdrawal),
        # A required participant's withdrawal stops the case; consent's rj.case.withdrawn says so next. Nothing
        # in between (a fact from another topic) may reach anyone.
        stopped_by_withdrawal=case.stopped_by_withdrawal or _could_stop(case, event.person_id),
    )
    out.case = case
    if case.stopped_by_withdrawal:  # the case stops: what waits for anyone goes now, as on the command (which the
        _stop_at_once(case, out, CancelReason.withdrawn)  # fact may overtake: they come on different topics)
    else:
        out.decision.cancels.append(Cancel(CancelReason.withdrawn, recipient_id=event.person_id, keep=KEPT_ON_A_STOP))
    out.staff(Kind.facilitator_withdrawal, urgent=True, facts={"withdrawal": out.cause})
    out.participant(Kind.withdrawal_confirmed, event.person_id, facts={"declined": declined})
    return case


def case_withdrawn(case: NotifyCase, event: CaseWithdrawn, out: _Out) -> NotifyCase:
    """The case stopped: everyone else is told only that the process has stopped (names no one, no why)."""
    if case.withdrawn:
        return case
    case = replace(case, withdrawn=True, victim_information_waiting=())
    out.case = case
    _stop_at_once(case, out, CancelReason.withdrawn)
    for person in case.people:
        if not person.withdrew:
            out.participant(Kind.process_stopped, person.person_id)
    return case


def case_held(case: NotifyCase, event: CaseHeld, out: _Out) -> NotifyCase:
    case, _ = _answer(case, event.command_id)
    case = replace(case, held=True)
    out.case = case
    _stop_at_once(case, out, CancelReason.held)
    out.staff(Kind.facilitator_hold, urgent=True)
    return case


def case_resumed(case: NotifyCase, event: CaseResumed, out: _Out) -> NotifyCase:
    """Off hold: new messages go again; what the hold cancelled stays cancelled."""
    return replace(case, held=False)


def consent_given(case: NotifyCase, event: ConsentGiven, out: _Out) -> NotifyCase:
    """Consent again after a withdrawal (allowed until the case stops): they may be written to again."""
    if event.purpose != PARTICIPATION or case.withdrawn:
        return case
    person = case.person(event.person_id)
    if person is None or not person.withdrew:
        return case
    return case.with_person(replace(person, withdrew=False))


# --- meetings, items, closure -------------------------------------------------------------------------


def _meeting_facts(event: MeetingBooked | MeetingRescheduled) -> dict[str, Any]:
    return {
        "meeting_id": event.meeting_id,
        "meeting_kind": event.kind.value,
        "starts_at": event.starts_at.isoformat(),
        "ends_at": event.ends_at.isoformat(),
        "venue_id": event.venue_id,
        "visit_slot": event.visit_slot,
        "lead_facilitator_id": event.lead_facilitator_id,
    }


def _remind(out: _Out, event: MeetingBooked | MeetingRescheduled, person_id: str, facts: dict[str, Any]) -> None:
    at = event.starts_at - out.policy.meeting_reminder
    if at <= out.now:
        return  # booked too close to the meeting: the booking notice is the reminder
    person = out.case.person(person_id)
    if due_for(person, at, out.policy) >= event.starts_at:
        return  # their hours would hold the reminder until after the meeting
    out.participant(Kind.meeting_reminder, person_id, at=at, about=f"meeting:{event.meeting_id}", facts=facts)


def meeting_booked(case: NotifyCase, event: MeetingBooked, out: _Out) -> NotifyCase:
    attendees = tuple(event.attendee_ids)
    note = MeetingNote(event.meeting_id, attendees, event.starts_at)
    case = replace(case, meetings=(*(m for m in case.meetings if m.meeting_id != event.meeting_id), note))
    out.case = case
    facts = _meeting_facts(event)
    for person_id in attendees:
        out.participant(Kind.meeting_booked, person_id, about=f"meeting:{event.meeting_id}", facts=facts)
        _remind(out, event, person_id, facts)
    return case


def meeting_rescheduled(case: NotifyCase, event: MeetingRescheduled, out: _Out) -> NotifyCase:
    out.decision.cancels.append(Cancel(CancelReason.superseded, about=f"meeting:{event.meeting_id}"))
    note = MeetingNote(event.meeting_id, tuple(event.attendee_ids), event.starts_at)
    case = replace(case, meetings=(*(m for m in case.meetings if m.meeting_id != event.meeting_id), note))
    out.case = case
    facts = _meeting_facts(event)
    for person_id in event.attendee_ids:
        out.participant(Kind.meeting_rescheduled, person_id, about=f"meeting:{event.meeting_id}", facts=facts)
        _remind(out, event, person_id, facts)
    return case


QUIET_CANCELLATIONS = frozenset({CancellationReason.case_withdrawn, CancellationReason.case_paused})
"""A meeting cancelled because the case stopped: its attendees hear of the stop, not of the meeting."""


def meeting_cancelled(case: NotifyCase, event: MeetingCancelled, out: _Out) -> NotifyCase:
    out.decision.cancels.append(Cancel(CancelReason.meeting_cancelled, about=f"meeting:{event.meeting_id}"))
    note = next((m for m in case.meetings if m.meeting_id == event.meeting_id), None)
    case = replace(case, meetings=tuple(m for m in case.meetings if m.meeting_id != event.meeting_id))
    out.case = case
    if note is None or event.reason_code in QUIET_CANCELLATIONS:
        return case
    for person_id in note.attendee_ids:
        facts = {"meeting_id": event.meeting_id, "starts_at": note.starts_at.isoformat()}
        out.participant(Kind.meeting_cancelled, person_id, facts=facts)
    return case


def attendee_removed(case: NotifyCase, event: MeetingAttendeeRemoved, out: _Out) -> NotifyCase:
    about = f"meeting:{event.meeting_id}"
    out.decision.cancels.append(Cancel(CancelReason.withdrawn, recipient_id=event.person_id, about=about))
    meetings = tuple(
        replace(m, attendee_ids=tuple(a for a in m.attendee_ids if a != event.person_id))
        if m.meeting_id == event.meeting_id
        else m
        for m in case.meetings
    )
    return replace(case, meetings=meetings)


def item_due_soon(case: NotifyCase, event: AgreementItemDueSoon, out: _Out) -> NotifyCase:
    facts = {"item_id": event.item_id, "item_kind": event.kind.value, "due_date": event.due_date.isoformat()}
    out.participant(Kind.item_reminder, event.owner_id, about=f"item:{event.item_id}", facts=facts)
    return case


def item_completed(case: NotifyCase, event: AgreementItemCompleted, out: _Out) -> NotifyCase:
    out.decision.cancels.append(Cancel(CancelReason.item_done, about=f"item:{event.item_id}"))
    return case


def item_overdue(case: NotifyCase, event: AgreementItemOverdue, out: _Out) -> NotifyCase:
    """The harmed people are told an item was not met: its kind and due date, never who owed it."""
    facts = {"item_kind": event.kind.value, "due_date": event.due_date.isoformat()}
    for person_id in event.tell_person_ids:
        out.participant(Kind.item_unmet, person_id, about=f"item:{event.item_id}", facts=facts)
    return case


def indirect_item_released(case: NotifyCase, event: IndirectItemReleased, out: _Out) -> NotifyCase:
    """An approved item the recipient agreed to receive, released at the time they chose: they are told it is
    ready (what it says is shared by their facilitator, never in a message)."""
    facts = {"item_kind": event.kind.value}
    out.participant(Kind.indirect_item, event.recipient_id, about=f"item:{event.item_id}", facts=facts)
    return case


def case_closed(case: NotifyCase, event: CaseClosed, out: _Out) -> NotifyCase:
    """The closure notice to every participant (even after a withdrawal); nothing else waits past it."""
    if case.closed:
        return case
    out.decision.cancels.append(Cancel(CancelReason.case_closed, keep=KEPT_ON_A_STOP, participants_only=True))
    case = replace(case, closed=True, victim_information_waiting=())
    out.case = case
    for person in case.people:
        out.participant(Kind.closure, person.person_id, facts={"closure_reason": event.reason.value})
    return case


def survey_invited(case: NotifyCase, event: SurveyInvited, out: _Out) -> NotifyCase:
    out.participant(Kind.survey_invitation, event.person_id)
    return case


# --- erasure and rectification ----------------------------------------------------------------------


def _erase(case: NotifyCase, person_id: str, out: _Out) -> NotifyCase:
    person = case.person(person_id)
    out.decision.cancels.append(Cancel(CancelReason.erased, recipient_id=person_id))
    if person is None:
        return case
    erased = Person(person_id=person_id, role=person.role, required=person.required, erased=True)
    return case.with_person(erased)


def person_erased(case: NotifyCase, event: PersonErased, out: _Out) -> NotifyCase:
    if case.case_id not in event.cases and not (event.case_id is None and case.person(event.erased_person_id)):
        return case
    return _erase(case, event.erased_person_id, out)


def declined_participant_erased(case: NotifyCase, event: DeclinedParticipantErased, out: _Out) -> NotifyCase:
    return _erase(case, event.erased_person_id, out)


def retention_erased(case: NotifyCase, event: CaseRetentionErased, out: _Out) -> NotifyCase:
    for erased in event.people:
        case = _erase(case, erased.person_id, out)
    return case


def participant_rectified(case: NotifyCase, event: ParticipantRectified, out: _Out) -> NotifyCase:
    """A corrected detail: the next message uses it. Fields notify does not keep are passed over."""
    person = case.person(event.person_id)
    if person is None or person.erased:
        return case
    value = event.value
    if event.field == "contact" and (value is None or isinstance(value, Contact)):
        return case.with_person(replace(person, contact=value))
    if event.field in ("email", "phone", "address") and (value is None or isinstance(value, str)):
        contact = (person.contact or Contact()).model_copy(update={event.field: value})
        return case.with_person(replace(person, contact=contact))
    if event.field == "name" and (value is None or isinstance(value, str)):
        return case.with_person(replace(person, name=value))
    if event.field == "preferred_channel" and isinstance(value, str) and value in Channel.__members__:
        return case.with_person(replace(person, preferred_channel=Channel(value)))
    return case


# --- the table -------------------------------------------------------------------------------------

HANDLERS: dict[type[EventData], Handler] = {
    CaseOpened: case_opened,
    OffenderJoined: offender_joined,
    CaseAccepted: case_accepted,
    VictimInformationDue: victim_information_due,
    RiskAssessmentRecorded: risk_assessed,
    FacilitatorAssigned: facilitator_assigned,
    ParticipantAdded: participant_added,
    SafeContactRecorded: safe_contact_recorded,
    ConsentGiven: consent_given,
    ConsentWithdrawn: consent_withdrawn_or_declined,
    ConsentDeclined: consent_withdrawn_or_declined,
    CaseWithdrawn: case_withdrawn,
    CaseHeld: case_held,
    CaseResumed: case_resumed,
    CommandRejected: command_rejected,
    SurveyInvited: survey_invited,
    WithdrawConsent: withdrawal_command,
    DeclineConsent: withdrawal_command,
    PutCaseOnHold: hold_command,
    MeetingBooked: meeting_booked,
    MeetingRescheduled: meeting_rescheduled,
    MeetingCancelled: meeting_cancelled,
    MeetingAttendeeRemoved: attendee_removed,
    AgreementItemDueSoon: item_due_soon,
    AgreementItemCompleted: item_completed,
    AgreementItemOverdue: item_overdue,
    IndirectItemReleased: indirect_item_released,
    CaseClosed: case_closed,
    PersonErased: person_erased,
    DeclinedParticipantErased: declined_participant_erased,
    CaseRetentionErased: retention_erased,
    ParticipantRectified: participant_rectified,
    ParticipantLinksChanged: links_changed,
    SetNotifyPreferences: set_preferences,
    NotifyPreferencesRecorded: preferences_recorded,
}

FOLLOWED_COMMANDS: frozenset[str] = frozenset(
    {WithdrawConsent.event_type, DeclineConsent.event_type, PutCaseOnHold.event_type}
)

CONSUMES: frozenset[str] = frozenset(model.event_type for model in HANDLERS)
"""Every event type notify takes in (the registry's names)."""

CASE_OPENERS: frozenset[type[EventData]] = frozenset({CaseOpened})


def cases_of(event: EventData) -> list[str]:
    """The cases an event is about: its ``case_id``; a person's erasure, every case it names."""
    if isinstance(event, PersonErased):
        return list(event.cases) or ([event.case_id] if event.case_id else [])
    case_id = getattr(event, "case_id", None)
    return [case_id] if isinstance(case_id, str) else []


def decide(
    case: NotifyCase | None,
    event: EventData,
    *,
    case_id: str,
    event_id: str,
    now: datetime,
    policy: Policy = DEFAULT_POLICY,
) -> Decision:
    """Apply one event of ``CONSUMES`` to the case ``case_id`` (``case`` None: not heard of yet)."""
    handler = HANDLERS.get(type(event))
    decision = Decision(case)
    if handler is None:
        return decision
    if case is None:
        if isinstance(event, (PersonErased, DeclinedParticipantErased, CaseRetentionErased)):
            return decision  # nothing of theirs here to erase
        case = NotifyCase(case_id=case_id)
    out = _Out(case, event_id, now, policy, decision)
    decision.case = handler(case, event, out)
    return decision


def delivery_problem(
    case: NotifyCase,
    *,
    notification: str,
    kind: Kind,
    recipient_id: str,
    recipient_kind: RecipientKind,
    problem: str,
    channel: Channel | None,
    next_channel: Channel | None,
    now: datetime,
) -> list[Intent]:
    """The facilitators are told, at once, that a participant's message failed, has no safe channel, or may or
    may not have gone (``problem``): which role and which kind of message, never an address or what it said. With
    no facilitator assigned yet (the victim's information goes on acceptance, before anyone is), and for a
    facilitator's own message, the hub's coordinators are told (``COORDINATOR``); a problem with the coordinators'
    message is logged, not mailed (it could only fail again the same way)."""
    if recipient_kind is RecipientKind.staff:
        if recipient_id == COORDINATOR:
            return []
        told: tuple[str, ...] = (COORDINATOR,)
    else:
        told = case.facilitator_ids or (COORDINATOR,)
    person = case.person(recipient_id)
    facts = {
        "problem": problem,
        "message_kind": kind.value,
        "recipient_role": person.role if person is not None and person.role != "unknown" else None,
        "channel": channel.value if channel else None,
        "next_channel": next_channel.value if next_channel else None,
    }
    return [
        Intent(
            notification_id=notification_id(notification, Kind.facilitator_delivery_problem, facilitator_id),
            recipient_id=facilitator_id,
            recipient_kind=RecipientKind.staff,
            kind=Kind.facilitator_delivery_problem,
            channel=Channel.email,
            due_at=now,
            urgent=True,
            cause_event_id=notification,
            facts=facts,
        )
        for facilitator_id in told
    ]


def next_attempt(
    case: NotifyCase, intent: Intent, failed: Iterable[Channel], now: datetime, policy: Policy
) -> Intent | None:
    """The same message on the next channel the person's record allows, after ``failed`` ones failed for good;
    None when there is none left (or the case no longer lets it go)."""
    if intent.recipient_kind is RecipientKind.staff or not participant_may_receive(
        case, intent.kind, intent.recipient_id
    ):
        return None
    person = case.person(intent.recipient_id)
    channel = choose_channel(person, excluding=failed)
    if channel is None:
        return None
    attempt = intent.attempt + 1
    return replace(
        intent,
        notification_id=notification_id(intent.cause_event_id, intent.kind, intent.recipient_id, attempt),
        channel=channel,
        attempt=attempt,
        due_at=due_for(person, now, policy),
    )
