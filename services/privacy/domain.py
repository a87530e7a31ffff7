"""The privacy service's decisions, pure: erasure, the erasure of someone who declines, retention (the
schedule, holds, what is due) and rectification. No I/O: ``app.py`` reads what a decision needs, and destroys
keys as it decides."""

from __future__ import annotations

import calendar
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cache
from typing import Any, Final

from pydantic import TypeAdapter, ValidationError

from schemas.commands import CommandRejected
from schemas.common import Actor
from schemas.consent import ParticipantErasureDue
from schemas.pii import monitoring_fields, pii_fields
from schemas.privacy import (
    KEPT_FOR_MONITORING,
    DeclinedParticipantErased,
    ErasedRole,
    ErasePerson,
    HoldKind,
    LiftRetentionHold,
    ParticipantRectified,
    PersonErased,
    PlaceRetentionHold,
    RectifyParticipant,
    RetentionHoldLifted,
    RetentionHoldPlaced,
)
from schemas.referral import Participant, Role
from schemas.scheduling import ClosureReason
from services.runtime.decision import Emit

SERVICE: Final = "privacy"

#: How a case can end, as the retention schedule names it: scheduling's closure reasons, and referral's
#: decline at screening (a case screened out never reached consent).
SCREENED_OUT: Final = "screened_out"
OUTCOMES: Final = frozenset({*(r.value for r in ClosureReason), SCREENED_OUT})
ROLES: Final = frozenset(r.value for r in Role)
ANY: Final = "*"


def refuse(command_type: str, subject: str, command_id: str, reason: str, now: datetime) -> Emit:
    """The answer to a command that is not allowed: it says why, and nothing changes."""
    fact = CommandRejected(
        case_id=subject,
        command_id=command_id,
        command_type=command_type,
        service=SERVICE,
        reason=reason,
        rejected_at=now,
    )
    return Emit(fact, f"rejected:{command_id}")


# --- the retention schedule ---------------------------------------------------------------------

_PERIOD = re.compile(r"^\s*(\d{1,6})\s*(second|minute|hour|day|week|month|year)s?\s*$")
_FIXED = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400}


class ScheduleError(ValueError):
    """RETENTION_SCHEDULE cannot be read: the service refuses to start rather than keep or erase wrongly."""


@dataclass(frozen=True)
class Period:
    """A retention period: a number of seconds to weeks, or of calendar months or years."""

    amount: int
    unit: str

    @classmethod
    def parse(cls, text: str) -> Period:
        match = _PERIOD.match(text) if isinstance(text, str) else None
        if match is None:
            raise ScheduleError(f"{text!r} is not a period such as '24 months', '30 days' or '5 seconds'")
        return cls(int(match.group(1)), match.group(2))

    def after(self, start: datetime) -> datetime:
        """When a period that starts at ``start`` ends (a month from 31 January ends on its last day of February)."""
        if self.unit in _FIXED:
            return start + timedelta(seconds=self.amount * _FIXED[self.unit])
        months = self.amount * (12 if self.unit == "year" else 1)
        month_index = start.month - 1 + months
        year, month = start.year + month_index // 12, month_index % 12 + 1
        return start.replace(year=year, month=month, day=min(start.day, calendar.monthrange(year, month)[1]))

    @property
    def at_least(self) -> timedelta:
        """A lower bound of its length wherever it starts (a month is at least 28 days)."""
        if self.unit in _FIXED:
            return timedelta(seconds=self.amount * _FIXED[self.unit])
        return timedelta(days=28 * self.amount * (12 if self.unit == "year" else 1))

    def __str__(self) -> str:
        return f"{self.amount} {self.unit}{'' if self.amount == 1 else 's'}"


@dataclass(frozen=True)
class RetentionSchedule:
    """How long personal data is kept after a case closes, by outcome and role.

    Entries are ``outcome/role``, ``outcome`` (every role), ``*/role`` or ``*``; the most specific entry that
    matches wins, in that order. ``*`` must be given, so that every case has a period.
    """

    rules: dict[str, Period]

    @classmethod
    def parse(cls, text: str) -> RetentionSchedule:
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise ScheduleError(f"RETENTION_SCHEDULE is not JSON: {exc}") from None
        if not isinstance(document, dict):
            raise ScheduleError("RETENTION_SCHEDULE must be a JSON object of 'outcome/role': 'period'")
        rules: dict[str, Period] = {}
        for key, value in document.items():
            outcome, _, role = key.partition("/")
            role = role or ANY
            if outcome not in OUTCOMES | {ANY}:
                raise ScheduleError(f"{key!r}: unknown outcome {outcome!r}; known: {', '.join(sorted(OUTCOMES))}")
            if role not in ROLES | {ANY}:
                raise ScheduleError(f"{key!r}: unknown role {role!r}; known: {', '.join(sorted(ROLES))}")
            rules[f"{outcome}/{role}"] = Period.parse(value)
        if f"{ANY}/{ANY}" not in rules:
            raise ScheduleError('RETENTION_SCHEDULE needs a "*" entry: the period for everything else')
        return cls(rules)

    def rule_for(self, outcome: str, role: str) -> tuple[str, Period]:
        """The entry that applies to ``role`` on a case that ended as ``outcome``, and its period."""
        for key in (f"{outcome}/{role}", f"{outcome}/{ANY}", f"{ANY}/{role}", f"{ANY}/{ANY}"):
            if key in self.rules:
                return key.removesuffix(f"/{ANY}"), self.rules[key]
        raise AssertionError("parse guarantees a '*' entry")

    @property
    def shortest(self) -> timedelta:
        return min(p.at_least for p in self.rules.values())

    @property
    def check_every_s(self) -> float:
        """How often to look for what is due: a fraction of the shortest period, between 0.5 s and an hour."""
        return min(max(self.shortest.total_seconds() / 4, 0.5), 3600.0)


@dataclass(frozen=True)
class Person:
    person_id: str
    role: str
    erased: bool = False


@dataclass(frozen=True)
class ClosedCase:
    """A closed case not yet wholly erased by retention, with no hold on it."""

    case_id: str
    outcome: str
    closed_at: datetime
    people: tuple[Person, ...]


@dataclass(frozen=True)
class RetentionDue:
    case_id: str
    people: tuple[ErasedRole, ...]
    whole_case: bool


def retention_due(schedule: RetentionSchedule, case: ClosedCase, now: datetime) -> RetentionDue | None:
    """Who on ``case`` is due for erasure at ``now`` (those not erased yet), and whether the whole case is:
    its own data goes with the last of its people, when every person's period has run out."""
    due: list[ErasedRole] = []
    last = case.closed_at
    for person in case.people:
        rule, period = schedule.rule_for(case.outcome, person.role)
        ends = period.after(case.closed_at)
        last = max(last, ends)
        if ends <= now and not person.erased:
            due.append(
                ErasedRole(person_id=person.person_id, role=person.role, rule=rule, period=str(period), due_at=ends)
            )
    if not case.people:
        last = schedule.rule_for(case.outcome, ANY)[1].after(case.closed_at)
    whole_case = last <= now
    if not due and not whole_case:
        return None
    return RetentionDue(case.case_id, tuple(due), whole_case)


# --- erasure ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErasurePlan:
    cases: tuple[str, ...]
    kept_under_hold: tuple[str, ...]


def plan_erasure(
    command: ErasePerson, command_id: str, *, known_cases: set[str], held_cases: set[str], now: datetime
) -> ErasurePlan | Emit:
    """Which of the person's cases to erase now; or a rejection. A case under a retention hold is kept
    (the hold says the data must stay); asked for one held case, the command is refused."""
    cases = {command.case_id} & known_cases if command.case_id is not None else known_cases
    if not cases:
        where = f"case {command.case_id}" if command.case_id is not None else "any case"
        return refuse(
            command.event_type, command.subject, command_id, f"unknown person {command.person_id} on {where}", now
        )
    erase, kept = sorted(cases - held_cases), sorted(cases & held_cases)
    if not erase:
        return refuse(
            command.event_type,
            command.subject,
            command_id,
            f"kept under a retention hold: {', '.join(kept)}; lift the hold first",
            now,
        )
    return ErasurePlan(tuple(erase), tuple(kept))


def person_erased(command: ErasePerson, command_id: str, plan: ErasurePlan, keys: int, now: datetime) -> Emit:
    fact = PersonErased(
        erased_person_id=command.person_id,
        case_id=command.case_id,
        cases=list(plan.cases),
        kept_under_hold=list(plan.kept_under_hold),
        keys_destroyed=keys,
        erased_by=command.actor,
        reason=command.reason,
        erased_at=now,
    )
    return Emit(fact, f"erased:{command_id}")


def deferred_erasure_done(
    person_id: str, case_id: str, command_id: str, asked_by: Actor, lift_id: str, keys: int, now: datetime
) -> Emit:
    """An erasure a hold kept, carried out now that the case's last hold is lifted."""
    fact = PersonErased(
        erased_person_id=person_id,
        case_id=case_id,
        cases=[case_id],
        keys_destroyed=keys,
        erased_by=asked_by,
        reason=f"asked by erasure command {command_id}, kept while the case was under a retention hold, done "
        f"when its last hold was lifted (command {lift_id})",
        erased_at=now,
    )
    return Emit(fact, f"erased-after-hold:{command_id}:{case_id}")


# --- someone who declines (rule 7) ---------------------------------------------------------------


class DueErasure(StrEnum):
    nothing = "nothing"  # erased already (by a command, retention, or this fact read again)
    erase = "erase"  # destroy their key on the case now
    keep_until_hold_lifted = "keep_until_hold_lifted"  # a retention hold keeps the data: erase when it is lifted


def erasure_when_due(fact: ParticipantErasureDue, *, already_erased: bool, held: bool) -> DueErasure:
    """Rule 7: for someone who declines to take part, keep only what monitoring needs. The consent service decides,
    in case order, that their erasure on the case is due (``rj.participant.erasure-due``: a grace period after the
    decline, the case open or closed, and they did not consent again first; it refuses their consent from then on).
    Their data on the case goes (their key there is destroyed; ids and monitoring data, under other keys, stay);
    a retention hold keeps it until its last hold is lifted, as it keeps everything else; read again, nothing."""
    if already_erased:
        return DueErasure.nothing
    return DueErasure.keep_until_hold_lifted if held else DueErasure.erase


def declined_participant_erased(
    *,
    case_id: str,
    person_id: str,
    role: str | None,
    decline_id: str,
    declined_at: datetime,
    declined_by: Actor,
    keys: int,
    now: datetime,
    kept_under_hold: bool = False,
) -> Emit:
    fact = DeclinedParticipantErased(
        case_id=case_id,
        erased_person_id=person_id,
        role=role,
        decline_id=decline_id,
        declined_at=declined_at,
        declined_by=declined_by,
        kept=list(KEPT_FOR_MONITORING),
        kept_under_hold=kept_under_hold,
        keys_destroyed=keys,
        erased_at=now,
    )
    return Emit(fact, f"declined-erased:{person_id}")


# --- holds --------------------------------------------------------------------------------------


def place_hold(command: PlaceRetentionHold, command_id: str, held: set[HoldKind], now: datetime) -> Emit:
    if command.kind in held:
        return refuse(command.event_type, command.case_id, command_id, f"case already has a {command.kind} hold", now)
    fact = RetentionHoldPlaced(
        case_id=command.case_id, kind=command.kind, reason=command.reason, placed_by=command.actor, placed_at=now
    )
    return Emit(fact, f"hold-placed:{command_id}")


def lift_hold(command: LiftRetentionHold, command_id: str, held: set[HoldKind], now: datetime) -> Emit:
    if command.kind not in held:
        return refuse(command.event_type, command.case_id, command_id, f"case has no {command.kind} hold to lift", now)
    fact = RetentionHoldLifted(
        case_id=command.case_id,
        kind=command.kind,
        reason=command.reason,
        lifted_by=command.actor,
        lifted_at=now,
        holds_remaining=sorted(held - {command.kind}),
    )
    return Emit(fact, f"hold-lifted:{command_id}")


# --- rectification ------------------------------------------------------------------------------

#: The fields a rectification may correct: a participant's personal fields, as the contract marks them. Not the
#: monitoring fields: a correction is sealed under the person's key, and would go with it when they decline.
RECTIFIABLE: Final = frozenset(pii_fields(Participant) - monitoring_fields(Participant))


@cache
def _field_type(name: str) -> TypeAdapter[Any]:
    return TypeAdapter(Participant.model_fields[name].annotation)


def rectify(command: RectifyParticipant, command_id: str, *, on_case: bool, erased: bool, now: datetime) -> Emit:
    """A correction of one personal field of a participant, the value checked against the field's type."""

    def refused(reason: str) -> Emit:
        return refuse(command.event_type, command.case_id, command_id, reason, now)

    if command.field not in RECTIFIABLE:
        return refused(
            f"{command.field!r} is not a personal field of a participant; one of: {', '.join(sorted(RECTIFIABLE))}"
        )
    if not on_case:
        return refused(f"unknown person {command.person_id} on case {command.case_id}")
    if erased:
        return refused(
            f"{command.person_id} was erased on case {command.case_id}: nothing of theirs is kept to correct"
        )
    adapter = _field_type(command.field)
    try:
        value = adapter.dump_python(adapter.validate_python(command.value), mode="json")
    except ValidationError as exc:
        problems = "; ".join(e["msg"] for e in exc.errors()[:3])
        return refused(f"not a valid {command.field}: {problems}")
    fact = ParticipantRectified(
        case_id=command.case_id,
        person_id=command.person_id,
        field=command.field,
        value=value,
        reason=command.reason,
        rectified_by=command.actor,
        rectified_at=now,
    )
    return Emit(fact, f"rectified:{command_id}")
