"""The console's action forms: for each command a member of staff sends from a case page, which fields its form
shows and how a posted form becomes the body the API's ``POST /cases/{id}/commands/{type}`` takes.

A form only gathers: the body is then checked by the very model the API route checks it with
(``StaffActions.body_models``), and sent by the same function (``StaffActions.send_case_command``). Pydantic's
errors come back by field, so the page can put each next to its field and in the error summary.

Times are entered as local times (Europe/London: the forces of England and Wales) and sent as aware datetimes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ValidationError

from schemas.consent import RecordedThrough, RecordingMethod, RiskLevel
from schemas.scheduling import ClosureReason, ItemKind, MeetingKind

LOCAL_TIME = ZoneInfo("Europe/London")
AGREEMENT_ROWS = 3
"""How many agreement item rows the agreement form offers; blank rows are left out."""

Kind = Literal[
    "text", "textarea", "choice", "yes_no", "datetime", "date", "person", "people", "meeting", "item", "indirect_item",
    "items",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class FormField:
    """One field of an action form: the body field it fills, how it is entered, and whether it may be left blank."""

    name: str
    kind: Kind
    required: bool = True
    choices: tuple[str, ...] = ()
    default: str = ""


def _choices(enum: type[StrEnum]) -> tuple[str, ...]:
    return tuple(member.value for member in enum)


_CONSENT = (
    FormField("person_id", "person"),
    FormField("purpose", "text", default="participation"),
    FormField("through", "choice", choices=_choices(RecordedThrough), default="facilitator"),
    FormField("method", "choice", choices=_choices(RecordingMethod), default="in_person"),
)

#: The actions a case page offers, in the order it lists them, with their forms.
ACTIONS: dict[str, tuple[FormField, ...]] = {
    "rj.facilitator.assign": (FormField("facilitator_id", "text"),),
    "rj.preparation-meeting.record": (
        FormField("person_id", "person"),
        FormField("met_at", "datetime", default="now"),
        FormField("method", "choice", choices=_choices(RecordingMethod), default="in_person"),
    ),
    "rj.consent.give": _CONSENT,
    "rj.consent.decline": _CONSENT,
    "rj.consent.withdraw": _CONSENT,
    "rj.risk-assessment.record": (
        FormField("assessed_at", "datetime", default="now"),
        FormField("level", "choice", choices=_choices(RiskLevel)),
        FormField("safe_to_proceed", "yes_no"),
    ),
    "rj.case.put-on-hold": (FormField("concern", "textarea"), FormField("raised_by", "text")),
    "rj.case.resume": (),
    "rj.meeting.book": (
        FormField("meeting_id", "text", default="new"),
        FormField("kind", "choice", choices=_choices(MeetingKind), default="conference"),
        FormField("starts_at", "datetime"),
        FormField("ends_at", "datetime"),
        FormField("lead_facilitator_id", "text", default="me"),
        FormField("co_facilitator_id", "text", required=False),
        FormField("venue_id", "text", required=False),
        FormField("visit_slot", "text", required=False),
    ),
    "rj.meeting.record-held": (FormField("meeting_id", "meeting"), FormField("held_at", "datetime", default="now")),
    "rj.agreement.record": (
        FormField("meeting_id", "meeting"),
        FormField("items", "items"),
        FormField("consented_by", "people"),
    ),
    "rj.agreement-item.complete": (FormField("item_id", "item"),),
    "rj.indirect.approve-item": (FormField("item_id", "indirect_item"),),
    "rj.indirect.reject-item": (FormField("item_id", "indirect_item"),),
    "rj.case.close": (FormField("closure_reason", "choice", choices=_choices(ClosureReason)),),
    "rj.case.add-note": (FormField("text", "textarea"), FormField("person_id", "person", required=False)),
}

ITEM_FIELDS = (
    FormField("item_id", "text"),
    FormField("kind", "choice", choices=_choices(ItemKind)),
    FormField("description", "textarea"),
    FormField("owner_id", "person"),
    FormField("due_date", "date"),
    FormField("amount_pence", "text", required=False),
)


@dataclass
class Parsed:
    """A posted form read: the body to validate, what was entered (to show again), and the problems by field id."""

    body: dict[str, Any] = field(default_factory=dict)
    entered: dict[str, Any] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)


def read_form(command_type: str, form: Mapping[str, Any], getlist: Any) -> Parsed:
    """The body a posted action form describes. ``getlist(name)`` gives every value of a repeated field (the
    people who consented). Blank optional fields are left out; a time that cannot be read is a problem of its
    field, as is anything the body model then refuses (``check``)."""
    parsed = Parsed()
    for spec in ACTIONS[command_type]:
        if spec.kind == "items":
            items = []
            for row in range(AGREEMENT_ROWS):
                values = {f.name: _text(form.get(f"items-{row}-{f.name}")) for f in ITEM_FIELDS}
                parsed.entered.update({f"items-{row}-{name}": value for name, value in values.items()})
                if not any(values.values()):
                    continue
                item: dict[str, Any] = {}
                for f in ITEM_FIELDS:
                    _put(item, f, values[f.name], parsed, field_id=f"items-{row}-{f.name}")
                items.append(item)
            parsed.body["items"] = items
            continue
        if spec.kind == "people":
            chosen = [value for value in getlist(spec.name) if isinstance(value, str) and value]
            parsed.entered[spec.name] = chosen
            parsed.body[spec.name] = chosen
            continue
        value = _text(form.get(spec.name))
        parsed.entered[spec.name] = value
        _put(parsed.body, spec, value, parsed, field_id=spec.name)
    reason = _text(form.get("reason"))
    parsed.entered["reason"] = reason
    if reason:
        parsed.body["reason"] = reason
    return parsed


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _put(body: dict[str, Any], spec: FormField, value: str, parsed: Parsed, *, field_id: str) -> None:
    if not value:
        if spec.required:
            parsed.problems[field_id] = "required"
        return
    match spec.kind:
        case "datetime":
            try:
                body[spec.name] = local_time(value).isoformat()
            except ValueError:
                parsed.problems[field_id] = "time"
        case "yes_no":
            body[spec.name] = value == "yes"
        case _ if spec.name == "amount_pence":
            try:
                pounds = Decimal(value.replace("£", "").replace(",", ""))
            except InvalidOperation:
                parsed.problems[field_id] = "amount"
                return
            body[spec.name] = int(pounds * 100) if pounds == pounds.quantize(Decimal("0.01")) else None
            if body[spec.name] is None:
                parsed.problems[field_id] = "amount"
        case _:
            body[spec.name] = value


def local_time(value: str) -> datetime:
    """A time as a ``datetime-local`` input sends it (``2026-05-01T10:00``), in Europe/London, made aware."""
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=LOCAL_TIME)


def local_input(moment: datetime | None = None) -> str:
    """``moment`` (default now) as a ``datetime-local`` input shows it, in Europe/London, to the minute."""
    return (moment or datetime.now(UTC)).astimezone(LOCAL_TIME).strftime("%Y-%m-%dT%H:%M")


def check(model: type[BaseModel], parsed: Parsed) -> BaseModel | None:
    """The body as ``model`` (the API's body model for the command) reads it, or None with every problem added to
    ``parsed.problems`` by the form's field id (``items-0-due_date`` for a row's field)."""
    if parsed.problems:
        _problems_of_model(model, parsed)
        return None
    try:
        return model.model_validate(parsed.body)
    except ValidationError as exc:
        for error in exc.errors():
            parsed.problems.setdefault(field_id(error.get("loc", ())), error.get("msg", "invalid"))
        return None


def _problems_of_model(model: type[BaseModel], parsed: Parsed) -> None:
    """The model's problems too, beside the form's own (so that every problem is shown at once)."""
    try:
        model.model_validate(parsed.body)
    except ValidationError as exc:
        for error in exc.errors():
            parsed.problems.setdefault(field_id(error.get("loc", ())), error.get("msg", "invalid"))


def field_id(location: Sequence[Any]) -> str:
    """The form's field id for pydantic's error location: ``("items", 0, "due_date")`` is ``items-0-due_date``."""
    parts = [str(part) for part in location]
    return "-".join(parts) if parts else "reason"
