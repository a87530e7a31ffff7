"""Replay one case from the audit log: its timeline (who, what, when, why) and its state at any moment.

audit.entries (the case's rows on rj.referral, rj.consent, rj.scheduling, rj.privacy, rj.api, rj.commands)
    ──► recorded_facts ──► timeline_of / state_at ──► what ``rj audit replay`` prints

Replay folds what was recorded; it never re-runs a decision and imports no service: the facts already say what
was decided, by whom and why, so an auditor's picture cannot drift with a service's code. A case's facts on
different topics are not ordered against each other (consent's may overtake referral's), so, as the API's read
model does, a status only moves forward by rank and the newest of two plans or holds is the one that counts;
the ranks below are the read model's, written again here because replay may not import it (``differences``
and the tests hold the two together).

Personal values stay sealed ("[sealed]") unless the caller opens them with the keys and a stated need; a value
whose key was destroyed (the person was erased) opens as its schema's stand-in ("[erased]"), so an erased
person's case replays without their data and without failing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import asyncpg
from pydantic import AwareDatetime, TypeAdapter

from schemas import topics
from schemas.api import ViewLogged
from schemas.consent import (
    CaseHeld,
    CaseReadinessLost,
    CaseReadyForMeeting,
    CaseResumed,
    CaseWithdrawn,
    ConsentDeclined,
    ConsentGiven,
    ConsentWithdrawn,
    FacilitatorAssigned,
    ParticipantAdded,
    PreparationStarted,
)
from schemas.indirect import (
    IndirectItemApproved,
    IndirectItemDelivered,
    IndirectItemRejected,
    IndirectItemReleased,
    IndirectItemSubmitted,
    IndirectItemWithdrawn,
)
from schemas.privacy import CaseRetentionErased, PersonErased
from schemas.referral import CaseAccepted, CaseDeclined, CaseOpened, OffenderJoined
from schemas.registry import REGISTRY
from schemas.scheduling import (
    AgreementItemCompleted,
    AgreementItemDueSoon,
    AgreementItemOverdue,
    AgreementRecorded,
    CaseClosed,
    MeetingBooked,
    MeetingCancelled,
    MeetingHeld,
    MeetingProposed,
    MeetingRescheduled,
    PaymentRecorded,
)
from services.audit import canonical
from services.runtime import privacy
from services.runtime.fieldcrypt import is_token

CASE_TOPICS: Final = (
    topics.REFERRAL,
    topics.CONSENT,
    topics.SCHEDULING,
    topics.PRIVACY,
    topics.API,
    topics.COMMANDS,
)
"""The topics keyed by case id whose records make a case's history (crime.events is keyed by crime reference)."""

SEALED: Final = "[sealed]"
"""What a personal value shows as when it was not opened."""

# The read model's ranks (services.api.folding): a state only moves forward.
CASE_STATUS_RANK: Final = {
    "referred": 0, "accepted": 1, "preparation": 2, "ready": 3, "withdrawn": 8, "declined": 9, "closed": 10,
}  # fmt: skip
MEETING_STATUS_RANK: Final = {"proposed": 0, "booked": 1, "held": 2, "cancelled": 3}
ITEM_STATE_RANK: Final = {"open": 0, "due_soon": 1, "overdue": 2, "completed": 3}
INDIRECT_STATE_RANK: Final = {
    "submitted": 0, "approved": 1, "rejected": 1, "released": 2, "withdrawn": 2, "delivered": 3,
}  # fmt: skip

_MOMENT: Final = TypeAdapter(AwareDatetime)


class ReplayError(ValueError):
    """A case that cannot be replayed as asked (no entries, a time without a zone)."""


@dataclass(frozen=True)
class RecordedFact:
    """One log entry of the case, parsed: where it sits in the log and the event it recorded."""

    idx: int
    topic: str
    time: datetime
    type: str
    event_id: str
    data: dict[str, Any]
    erased: tuple[str, ...] = ()


@dataclass(frozen=True)
class TimelineEntry:
    idx: int
    at: datetime
    topic: str
    type: str
    who: list[str]
    why: list[str]
    details: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {
            "idx": self.idx, "at": self.at.isoformat(), "topic": self.topic, "type": self.type, "who": self.who,
            "why": self.why, "details": self.details,
        }  # fmt: skip


@dataclass
class CaseState:
    """A case as its facts up to a moment leave it: the fields an auditor asks about."""

    case_id: str
    at: datetime
    status: str | None = None
    facilitator_ids: list[str] = field(default_factory=list)
    roles: dict[str, str] = field(default_factory=dict)
    required: dict[str, bool] = field(default_factory=dict)
    consents: dict[str, dict[str, str]] = field(default_factory=dict)
    """person id ("[sealed]" when who withdrew or declined was not opened) -> purpose -> latest decision"""
    consent_made_at: dict[tuple[str, str], datetime] = field(default_factory=dict)
    on_hold: bool = False
    hold_changed_at: datetime | None = None
    hold_concern: Any = None
    meetings: dict[str, str] = field(default_factory=dict)
    agreement_items: dict[str, str] = field(default_factory=dict)
    indirect_items: dict[str, str] = field(default_factory=dict)
    closure_reason: str | None = None
    closed_at: datetime | None = None
    closed_by: Any = None
    erased_people: list[str] = field(default_factory=list)
    facts_folded: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "case_id": self.case_id,
            "at": self.at.isoformat(),
            "status": self.status,
            "facilitator_ids": self.facilitator_ids,
            "participants": [
                {"person_id": p, "role": r, "required": self.required.get(p), "consent": self.consents.get(p, {})}
                for p, r in sorted(self.roles.items())
            ],
            "consents": self.consents,
            "hold": {"on_hold": self.on_hold, "since": _iso(self.hold_changed_at), "concern": self.hold_concern},
            "meetings": self.meetings,
            "agreement_items": self.agreement_items,
            "indirect_items": self.indirect_items,
            "closure": {"reason": self.closure_reason, "at": _iso(self.closed_at), "by": self.closed_by},
            "erased_people": self.erased_people,
            "facts_folded": self.facts_folded,
        }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def parse_moment(text: str) -> datetime:
    """An ISO 8601 time with its zone (``--at``): a time without one would mean different moments to different
    auditors."""
    try:
        return _MOMENT.validate_python(text)
    except ValueError as error:
        raise ReplayError(f"--at {text!r} is not an ISO 8601 time with a zone (e.g. 2030-01-07T09:00:00Z)") from error


# --- reading the log ----------------------------------------------------------------------------------


async def recorded_facts(conn: asyncpg.Connection, case_id: str, *, open_personal: bool = False) -> list[RecordedFact]:
    """The case's entries in log order, parsed from their canonical bytes; personal values opened only when
    ``open_personal`` (the installed key store's keys), else shown as ``[sealed]``."""
    rows = await conn.fetch(
        """SELECT idx, topic, body FROM audit.entries WHERE key = $1 AND topic = ANY($2::text[]) ORDER BY idx""",
        case_id,
        list(CASE_TOPICS),
    )
    facts = [fact for row in rows if (fact := _fact_of(row["idx"], row["topic"], row["body"])) is not None]
    if open_personal:
        return await _opened(conn, facts, case_id)
    return [_with_sealed_shown(fact) for fact in facts]


def _fact_of(idx: int, topic: str, body: bytes) -> RecordedFact | None:
    """An entry's event, or None for one that is not a CloudEvent about anything (a tombstone, raw bytes)."""
    value = canonical.from_canonical(bytes(body))
    if not isinstance(value, dict) or not isinstance(value.get("data"), dict) or "type" not in value:
        return None
    try:
        moment = _MOMENT.validate_python(value.get("time"))
    except ValueError:
        return None
    return RecordedFact(idx, topic, moment, str(value["type"]), str(value.get("id", "")), value["data"])


def fact_from_event(idx: int, topic: str, event: Any) -> RecordedFact:
    """A fact as replay reads it, from a CloudEvent as a service writes it (what its canonical bytes parse to)."""
    document = json.loads(event.to_json())
    return RecordedFact(idx, topic, event.time, event.type, event.id, document["data"])


def _with_sealed_shown(fact: RecordedFact) -> RecordedFact:
    return RecordedFact(fact.idx, fact.topic, fact.time, fact.type, fact.event_id, _hide_tokens(fact.data))


def _hide_tokens(value: Any) -> Any:
    if is_token(value):
        return SEALED
    if isinstance(value, dict):
        return {name: _hide_tokens(inner) for name, inner in value.items()}
    if isinstance(value, list):
        return [_hide_tokens(inner) for inner in value]
    return value


async def _opened(conn: asyncpg.Connection, facts: list[RecordedFact], case_id: str) -> list[RecordedFact]:
    """Each fact's sealed values opened under the case's keys; a value of an erased person opens as the stand-in
    its schema gives. A type the contract does not know is shown sealed."""
    batch = privacy.batch()
    out = []
    for fact in facts:
        if fact.type not in REGISTRY:
            out.append(_with_sealed_shown(fact))
            continue
        [opened] = await batch.open_documents(conn, REGISTRY.model(fact.type), [fact.data], [case_id])
        out.append(RecordedFact(fact.idx, fact.topic, fact.time, fact.type, fact.event_id, opened.data, opened.erased))
    return out


# --- the timeline -----------------------------------------------------------------------------------------

_WHY_FIELDS: Final = ("reason", "reason_code", "concern", "outcome", "note", "what")


def timeline_of(facts: Iterable[RecordedFact]) -> list[TimelineEntry]:
    """Every entry of the case, commands and the view log included: who (each ``*_by`` actor and, for a view,
    the viewer), what (the type and the fact's own fields), when (its event time) and why (its reasons)."""
    return [
        TimelineEntry(
            idx=fact.idx,
            at=fact.time,
            topic=fact.topic,
            type=fact.type,
            who=_who(fact),
            why=[str(fact.data[name]) for name in _WHY_FIELDS if fact.data.get(name) not in (None, "", [])],
            details={name: value for name, value in fact.data.items() if name != "case_id"},
        )
        for fact in facts
    ]


def _who(fact: RecordedFact) -> list[str]:
    if fact.type == ViewLogged.event_type:
        return [f"{fact.data.get('role', '?')}:{fact.data.get('viewer_id', '?')}"]
    who = []
    for name, value in fact.data.items():
        if not name.endswith("_by"):
            continue
        if isinstance(value, Mapping):
            who.append(f"{name}={value.get('kind', '?')}:{value.get('id', '?')}")
        elif isinstance(value, str):
            who.append(f"{name}={value}")
        elif isinstance(value, list):
            who.append(f"{name}={','.join(str(v) for v in value)}")
    return who


# --- the state at a moment --------------------------------------------------------------------------------


def state_at(case_id: str, facts: Iterable[RecordedFact], at: datetime) -> CaseState:
    """The case as the facts whose event time is at or before ``at`` leave it, folded in log order."""
    state = CaseState(case_id=case_id, at=at)
    for fact in facts:
        if fact.time > at or fact.topic == topics.COMMANDS:
            continue  # a command asks; only the facts its service recorded say what happened
        fold = _FOLDS.get(fact.type)
        if fold is not None:
            fold(state, fact, fact.data)
        state.facts_folded += 1
    state.facilitator_ids.sort()
    return state


def _forward(ranks: Mapping[str, int], current: str | None, new: str) -> bool:
    return current is None or ranks[new] >= ranks.get(current, -1)


def _status(state: CaseState, new: str, *, readiness_lost: bool = False) -> None:
    if readiness_lost and state.status == "ready" or _forward(CASE_STATUS_RANK, state.status, new):
        state.status = new


def _participants(state: CaseState, people: Iterable[Mapping[str, Any]]) -> None:
    for person in people:
        person_id = person.get("person_id")
        if isinstance(person_id, str):
            if isinstance(person.get("role"), str):
                state.roles[person_id] = person["role"]
            if isinstance(person.get("required"), bool):
                state.required[person_id] = person["required"]


def _moment(value: Any) -> datetime | None:
    try:
        return _MOMENT.validate_python(value)
    except ValueError:
        return None


def _case_opened(state: CaseState, fact: RecordedFact, d: dict[str, Any]) -> None:
    _status(state, "referred")
    _participants(state, d.get("participants", []))


def _screened(new: str) -> Any:
    def fold(state: CaseState, fact: RecordedFact, d: dict[str, Any]) -> None:
        _status(state, new)
        _participants(state, d.get("participants", []))

    return fold


def _offender_joined(state: CaseState, fact: RecordedFact, d: dict[str, Any]) -> None:
    _participants(state, [d.get("participant", {})])


def _participant_added(state: CaseState, fact: RecordedFact, d: dict[str, Any]) -> None:
    _participants(state, [d.get("participant", {})])


def _facilitator(state: CaseState, fact: RecordedFact, d: dict[str, Any]) -> None:
    facilitator_id = d.get("facilitator_id")
    if isinstance(facilitator_id, str) and facilitator_id not in state.facilitator_ids:
        state.facilitator_ids.append(facilitator_id)


def _consent(decision: str, moment_field: str) -> Any:
    """The newest decision per person and purpose by when it was made (as the read model orders them), whatever
    order the topics delivered them in."""

    def fold(state: CaseState, fact: RecordedFact, d: dict[str, Any]) -> None:
        person, purpose = str(d.get("person_id")), str(d.get("purpose"))
        moment = _moment(d.get(moment_field)) or fact.time
        made = state.consent_made_at.get((person, purpose))
        if made is None or made <= moment:
            state.consents.setdefault(person, {})[purpose] = decision
            state.consent_made_at[(person, purpose)] = moment

    return fold


def _readiness_lost(state: CaseState, fact: RecordedFact, d: dict[str, Any]) -> None:
    _status(state, "preparation", readiness_lost=True)


def _withdrawn(state: CaseState, fact: RecordedFact, d: dict[str, Any]) -> None:
    _status(state, "withdrawn")


def _hold(on_hold: bool, moment_field: str) -> Any:
    def fold(state: CaseState, fact: RecordedFact, d: dict[str, Any]) -> None:
        moment = _moment(d.get(moment_field)) or fact.time
        if state.hold_changed_at is None or state.hold_changed_at <= moment:
            state.on_hold, state.hold_changed_at = on_hold, moment
            state.hold_concern = d.get("concern") if on_hold else None

    return fold


def _meeting(new: str) -> Any:
    def fold(state: CaseState, fact: RecordedFact, d: dict[str, Any]) -> None:
        meeting_id = str(d.get("meeting_id"))
        if _forward(MEETING_STATUS_RANK, state.meetings.get(meeting_id), new):
            state.meetings[meeting_id] = new

    return fold


def _agreement(state: CaseState, fact: RecordedFact, d: dict[str, Any]) -> None:
    for item in d.get("items", []):
        state.agreement_items.setdefault(str(item.get("item_id")), "open")


def _item(new: str) -> Any:
    def fold(state: CaseState, fact: RecordedFact, d: dict[str, Any]) -> None:
        item_id = str(d.get("item_id"))
        if _forward(ITEM_STATE_RANK, state.agreement_items.get(item_id), new):
            state.agreement_items[item_id] = new

    return fold


def _indirect(new: str) -> Any:
    def fold(state: CaseState, fact: RecordedFact, d: dict[str, Any]) -> None:
        item_id = str(d.get("item_id"))
        if _forward(INDIRECT_STATE_RANK, state.indirect_items.get(item_id), new):
            state.indirect_items[item_id] = new

    return fold


def _closed(state: CaseState, fact: RecordedFact, d: dict[str, Any]) -> None:
    state.closure_reason, state.closed_at, state.closed_by = (
        d.get("reason"),
        _moment(d.get("closed_at")),
        d.get("closed_by"),
    )
    _status(state, "closed")


def _person_erased(state: CaseState, fact: RecordedFact, d: dict[str, Any]) -> None:
    if state.case_id in d.get("kept_under_hold", []):
        return
    person = d.get("erased_person_id")
    if isinstance(person, str) and person not in state.erased_people:
        state.erased_people.append(person)


def _retention_erased(state: CaseState, fact: RecordedFact, d: dict[str, Any]) -> None:
    for person in d.get("people", []):
        person_id = person.get("person_id") if isinstance(person, Mapping) else None
        if isinstance(person_id, str) and person_id not in state.erased_people:
            state.erased_people.append(person_id)


_FOLDS: dict[str, Any] = {
    CaseOpened.event_type: _case_opened,
    CaseAccepted.event_type: _screened("accepted"),
    CaseDeclined.event_type: _screened("declined"),
    OffenderJoined.event_type: _offender_joined,
    PreparationStarted.event_type: _screened("preparation"),
    FacilitatorAssigned.event_type: _facilitator,
    ConsentGiven.event_type: _consent("given", "given_at"),
    ConsentDeclined.event_type: _consent("declined", "declined_at"),
    ConsentWithdrawn.event_type: _consent("withdrawn", "withdrawn_at"),
    CaseReadyForMeeting.event_type: _screened("ready"),
    CaseReadinessLost.event_type: _readiness_lost,
    CaseWithdrawn.event_type: _withdrawn,
    CaseHeld.event_type: _hold(True, "held_at"),
    CaseResumed.event_type: _hold(False, "resumed_at"),
    ParticipantAdded.event_type: _participant_added,
    MeetingProposed.event_type: _meeting("proposed"),
    MeetingBooked.event_type: _meeting("booked"),
    MeetingRescheduled.event_type: _meeting("booked"),
    MeetingCancelled.event_type: _meeting("cancelled"),
    MeetingHeld.event_type: _meeting("held"),
    AgreementRecorded.event_type: _agreement,
    PaymentRecorded.event_type: _item("open"),
    AgreementItemCompleted.event_type: _item("completed"),
    AgreementItemDueSoon.event_type: _item("due_soon"),
    AgreementItemOverdue.event_type: _item("overdue"),
    CaseClosed.event_type: _closed,
    IndirectItemSubmitted.event_type: _indirect("submitted"),
    IndirectItemApproved.event_type: _indirect("approved"),
    IndirectItemRejected.event_type: _indirect("rejected"),
    IndirectItemReleased.event_type: _indirect("released"),
    IndirectItemWithdrawn.event_type: _indirect("withdrawn"),
    IndirectItemDelivered.event_type: _indirect("delivered"),
    PersonErased.event_type: _person_erased,
    CaseRetentionErased.event_type: _retention_erased,
}
"""What each fact changes in the state; a fact not named here shows in the timeline only."""


# --- held against the API's read model ----------------------------------------------------------------------


def comparable_state(state: CaseState) -> dict[str, Any]:
    """The fields replay and the API's case page both have, in one shape."""
    return {
        "status": state.status,
        "facilitator_ids": sorted(state.facilitator_ids),
        "roles": dict(sorted(state.roles.items())),
        "consents": {p: dict(sorted(c.items())) for p, c in sorted(state.consents.items())},
        "on_hold": state.on_hold,
        "meetings": dict(sorted(state.meetings.items())),
        "agreement_items": dict(sorted(state.agreement_items.items())),
        "closure_reason": state.closure_reason,
    }


def comparable_case_page(page: Mapping[str, Any]) -> dict[str, Any]:
    """The same fields from the API's case page as JSON (``CaseDetail``, read with personal values so that who
    withdrew is known), consents taken from its decisions in the order they were made, as the page does."""
    consents: dict[str, dict[str, str]] = {}
    for decision in page.get("consents", []):
        consents.setdefault(str(decision.get("person_id")), {})[decision["purpose"]] = decision["decision"]
    return {
        "status": page.get("status"),
        "facilitator_ids": sorted(page.get("facilitator_ids", [])),
        "roles": dict(sorted((p["person_id"], p["role"]) for p in page.get("participants", []) if p.get("role"))),
        "consents": {p: dict(sorted(c.items())) for p, c in sorted(consents.items())},
        "on_hold": bool(page.get("hold", {}).get("on_hold")),
        "meetings": dict(sorted((m["meeting_id"], m["status"]) for m in page.get("meetings", []))),
        "agreement_items": dict(sorted((i["item_id"], i["state"]) for i in page.get("agreement_items", []))),
        "closure_reason": page.get("closure_reason"),
    }


def differences(state: CaseState, page: Mapping[str, Any]) -> list[str]:
    """Where replay and the API's case page disagree, field by field (empty: they agree)."""
    ours, theirs = comparable_state(state), comparable_case_page(page)
    return [f"{name}: replay {ours[name]!r}, API {theirs[name]!r}" for name in ours if ours[name] != theirs[name]]


def facts_up_to(facts: Sequence[RecordedFact], at: datetime) -> list[RecordedFact]:
    return [fact for fact in facts if fact.time <= at]
