"""The agreement reached at a meeting: recording it, payments towards reparations, completing its items (the
last item completed closes the case as completed), and following its items up (DOMAIN stage 6).

Follow-up: a sweep (``follow_up``) flags each item not completed, once, as due soon when its due date falls
within the next ``Policy.item_due_soon_working_days`` working days, and, once, as overdue when its due date has
passed (dates in UK local time; working days as ``services.runtime.calendar`` counts them). An item already
overdue when first swept is flagged overdue only: a reminder after the due date would be wrong. Nothing is
flagged while the case is on hold, awaiting a withdrawal's or a hold's verdict, or closed
(``CaseSchedule.follow_up_paused``): after a resume the sweep finds what is still due. Completing an item stops
its clock. ``watched`` says which items the sweep must look at next, so that the app can keep them in an
indexed table rather than read every case.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime

from schemas.common import Actor
from schemas.referral import Role
from schemas.scheduling import (
    SYSTEM_SCHEDULING,
    AgreementItemCompleted,
    AgreementItemDueSoon,
    AgreementItemOverdue,
    AgreementRecorded,
    CancellationReason,
    ClosureReason,
    CompleteAgreementItem,
    ItemKind,
    MeetingStatus,
    PaymentRecorded,
    RecordAgreement,
    RecordPayment,
)
from services.runtime.calendar import add_working_days
from services.runtime.decision import Emit
from services.scheduling.domain.closure import (
    _close,
)
from services.scheduling.domain.meetings import (
    _cancel_pending,
)
from services.scheduling.domain.model import (
    DEFAULT_POLICY,
    Agreement,
    AgreementItem,
    CaseSchedule,
    Outcome,
    Policy,
    ResourceBook,
    _refusal,
    _reject,
    _without_consent,
    local_day,
)

# --- commands -----------------------------------------------------------------------------------


def record_agreement(
    case: CaseSchedule | None, book: ResourceBook, command: RecordAgreement, *, command_id: str, now: datetime
) -> Outcome:
    """Saved only with every required participant's recorded consent to it."""
    refusal = _refusal(case, command) or _without_consent(case) or _agreement_refusal(case, command)
    if refusal is not None:
        return _reject(case, book, command, command_id, now, refusal)
    assert case is not None
    items = tuple(AgreementItem(i.item_id, i.kind, i.owner_id, i.due_date, i.amount_pence) for i in command.items)
    case = replace(case, agreement=Agreement(command.meeting_id, items, tuple(command.consented_by), now))
    fact = AgreementRecorded(
        case_id=case.case_id,
        meeting_id=command.meeting_id,
        items=command.items,
        consented_by=command.consented_by,
        recorded_at=now,
        recorded_by=command.actor,
    )
    return case, book, [Emit(fact, "agreement-recorded")]


def record_payment(
    case: CaseSchedule | None, book: ResourceBook, command: RecordPayment, *, command_id: str, now: datetime
) -> Outcome:
    """A payment towards a reparation; the item is done when the payments reach its amount."""
    item = case.agreement.item(command.item_id) if case is not None and case.agreement is not None else None
    refusal = _refusal(case, command) or _item_refusal(case, item, command.item_id)
    if refusal is None and item is not None and item.kind is not ItemKind.reparation:
        refusal = f"item {command.item_id} is {item.kind}, not a reparation: it takes no payments"
    if refusal is not None:
        return _reject(case, book, command, command_id, now, refusal)
    assert case is not None and case.agreement is not None and item is not None and item.amount_pence is not None
    paid = item.paid_pence + command.amount_pence
    case = _with_item(case, replace(item, paid_pence=paid))
    fact = PaymentRecorded(
        case_id=case.case_id,
        item_id=item.item_id,
        amount_pence=command.amount_pence,
        paid_at=command.paid_at,
        total_paid_pence=paid,
        amount_due_pence=item.amount_pence,
        recorded_at=now,
        recorded_by=command.actor,
    )
    emits = [Emit(fact, f"payment-recorded:{command_id}")]
    if paid < item.amount_pence:
        return case, book, emits
    return _complete_item(case, book, item.item_id, command.actor, by_payments=True, emits=emits, now=now)


def complete_agreement_item(
    case: CaseSchedule | None, book: ResourceBook, command: CompleteAgreementItem, *, command_id: str, now: datetime
) -> Outcome:
    item = case.agreement.item(command.item_id) if case is not None and case.agreement is not None else None
    refusal = _refusal(case, command) or _item_refusal(case, item, command.item_id, repeat_ok=True)
    if refusal is not None:
        return _reject(case, book, command, command_id, now, refusal)
    assert case is not None and item is not None
    if item.completed_at is not None:
        return case, book, []  # already done: a repeat is harmless
    return _complete_item(case, book, item.item_id, command.actor, by_payments=False, emits=[], now=now)


# --- the agreement ------------------------------------------------------------------------------


def _agreement_refusal(case: CaseSchedule | None, command: RecordAgreement) -> str | None:
    assert case is not None
    if case.agreement is not None:
        return "an agreement is already recorded on this case"
    meeting = case.meeting(command.meeting_id)
    if meeting is None or meeting.status is not MeetingStatus.held:
        return f"meeting {command.meeting_id} has not been held on this case"
    ids = [i.item_id for i in command.items]
    if len(set(ids)) != len(ids):
        return "agreement item ids must be unique"
    for item in command.items:
        if case.participant(item.owner_id) is None:
            return f"item {item.item_id}: its owner {item.owner_id} is not a participant in this case"
        if item.kind is ItemKind.reparation and item.amount_pence is None:
            return f"item {item.item_id}: a reparation needs an amount"
        if item.kind is not ItemKind.reparation and item.amount_pence is not None:
            return f"item {item.item_id}: only a reparation has an amount"
    strangers = [p for p in command.consented_by if case.participant(p) is None]
    if strangers:
        return f"{', '.join(strangers)} not a participant in this case"
    missing = [p.person_id for p in case.participants if p.required and p.person_id not in command.consented_by]
    if missing:
        return f"the agreement needs the recorded consent of every party; missing: {', '.join(missing)}"
    return None


def _item_refusal(
    case: CaseSchedule | None, item: AgreementItem | None, item_id: str, *, repeat_ok: bool = False
) -> str | None:
    assert case is not None
    if case.agreement is None:
        return "no agreement is recorded on this case"
    if item is None:
        return f"the agreement has no item {item_id}"
    if item.completed_at is not None and not repeat_ok:
        return f"item {item_id} is already completed"
    return None


def _with_item(case: CaseSchedule, item: AgreementItem) -> CaseSchedule:
    assert case.agreement is not None
    items = tuple(item if i.item_id == item.item_id else i for i in case.agreement.items)
    return replace(case, agreement=replace(case.agreement, items=items))


def _complete_item(
    case: CaseSchedule,
    book: ResourceBook,
    item_id: str,
    by: Actor,
    *,
    by_payments: bool,
    emits: list[Emit],
    now: datetime,
) -> Outcome:
    """Mark an item done; the last one done closes the case as completed."""
    assert case.agreement is not None
    item = case.agreement.item(item_id)
    assert item is not None
    case = _with_item(case, replace(item, completed_at=now))
    fact = AgreementItemCompleted(
        case_id=case.case_id,
        item_id=item_id,
        kind=item.kind,
        by_payments=by_payments,
        completed_at=now,
        completed_by=by,
    )
    emits = [*emits, Emit(fact, f"item-completed:{item_id}")]
    assert case.agreement is not None
    if any(i.completed_at is None for i in case.agreement.items):
        return case, book, emits
    case, book, cancelled = _cancel_pending(case, book, CancellationReason.case_closed, SYSTEM_SCHEDULING, None, now)
    return _close(case, book, ClosureReason.completed, SYSTEM_SCHEDULING, [*emits, *cancelled], now)


# --- follow-up ----------------------------------------------------------------------------------

DUE_SOON = "due-soon"
OVERDUE = "overdue"


def is_due_soon(item: AgreementItem, today: date, working_days: int) -> bool:
    """Not completed and falling due within the next ``working_days`` working days (today and the due date
    itself count as within: an item due today, or on the weekend after Friday's reminder, is due soon)."""
    return item.completed_at is None and today <= item.due_date <= add_working_days(today, working_days)


def follow_up(case: CaseSchedule, *, policy: Policy = DEFAULT_POLICY, now: datetime) -> tuple[CaseSchedule, list[Emit]]:
    """Flag each item that became due soon or overdue since the last sweep, once each."""
    if case.agreement is None or case.follow_up_paused:
        return case, []
    today = local_day(now)
    emits: list[Emit] = []
    for item in case.agreement.items:
        if item.overdue_flagged_at is not None:
            continue
        if item.is_overdue(today):
            case = _with_item(case, replace(item, overdue_flagged_at=now))
            emits.append(Emit(_overdue(case, item, now), f"item-overdue:{item.item_id}"))
        elif item.due_soon_flagged_at is None and is_due_soon(item, today, policy.item_due_soon_working_days):
            case = _with_item(case, replace(item, due_soon_flagged_at=now))
            fact = AgreementItemDueSoon(
                case_id=case.case_id,
                item_id=item.item_id,
                kind=item.kind,
                owner_id=item.owner_id,
                due_date=item.due_date,
                flagged_at=now,
                flagged_by=SYSTEM_SCHEDULING,
            )
            emits.append(Emit(fact, f"item-due-soon:{item.item_id}"))
    return case, emits


def _overdue(case: CaseSchedule, item: AgreementItem, now: datetime) -> AgreementItemOverdue:
    """Who is told: the victims who still take part (one who withdrew or declined is sent nothing more)."""
    victims = [p.person_id for p in case.participants if p.role is Role.victim and p.person_id in case.consenting]
    return AgreementItemOverdue(
        case_id=case.case_id,
        item_id=item.item_id,
        kind=item.kind,
        due_date=item.due_date,
        tell_person_ids=victims,
        flagged_at=now,
        flagged_by=SYSTEM_SCHEDULING,
    )


def watched(case: CaseSchedule | None) -> list[tuple[str, date, str]]:
    """The items a sweep must look at, as ``(item id, due date, what is flagged next)``: ``due-soon`` (the sweep
    looks when the due date comes within the working days ahead, and flags it overdue instead if it has passed)
    or ``overdue`` (when the due date has passed). None while follow-up is paused: the state after a resume
    puts them back."""
    if case is None or case.agreement is None or case.follow_up_paused:
        return []
    return [
        (i.item_id, i.due_date, OVERDUE if i.due_soon_flagged_at is not None else DUE_SOON)
        for i in case.agreement.items
        if i.completed_at is None and i.overdue_flagged_at is None
    ]
