"""Indirect RJ (DOMAIN stage 4, rule 9): the case's contact form, recipients' advance agreements, and items passed
between the parties by the facilitator.

Rule 9 (nothing from the offender reaches the victim unless the victim agreed in advance to receive it and the
facilitator approved its content), applied to every recipient: an item is released (``IndirectItemReleased``,
which notify delivers) only when ``release_refusal`` finds nothing against it:
- the facilitator approved it (and has not rejected it since);
- its recipient's advance agreement is current (not stopped) and covers its kind;
- the recipient's chosen time has come: at once, not before their date and time (the sweeper, ``release_due``
  with ``ReleaseTrigger.time``), or only when they ask (``request_items``);
- the case is open, not on hold, not pending a withdrawal or hold verdict, ready as the consent service last
  said, and both the sender's and the recipient's participation consent is current (rule 1);
- we are reading a command on ``rj.commands``, in the case's order: so every stop, withdrawal of the item,
  rejection, switch back, narrower agreement, hold or withdrawal sent before it has been read. A fact from
  another topic (consent given, readiness, a verdict lifting a pending withdrawal) never releases anything by
  itself: an item it frees goes on the release watch, due at once, and the sweeper's ``ReleaseDueItems``, read in
  case order, decides.
``release_due`` runs after every command the service accepts (``handle``), so an item goes as soon as the last
command it waited for is read, and never before; it re-checks everything each time. A withdrawal closes the case:
what was not released by then never is; a party who is not required and whose withdrawal or decline is accepted
stops receiving, and their items not yet released are withdrawn (``end_participation``).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from schemas.commands import Command
from schemas.common import Actor
from schemas.indirect import (
    AgreeToReceiveItems,
    ApproveIndirectItem,
    ContactForm,
    ContactFormSwitched,
    IndirectEndReason,
    IndirectItemApproved,
    IndirectItemDelivered,
    IndirectItemKind,
    IndirectItemRejected,
    IndirectItemReleased,
    IndirectItemSubmitted,
    IndirectItemWithdrawn,
    ReceivingAgreed,
    ReceivingStopped,
    RecordItemDelivered,
    RejectIndirectItem,
    ReleaseDueItems,
    ReleaseTiming,
    ReleaseTrigger,
    RequestItems,
    StopReceivingItems,
    SubmitIndirectItem,
    SwitchContactForm,
    WithdrawIndirectItem,
)
from schemas.referral import Role
from schemas.scheduling import SYSTEM_SCHEDULING, CancellationReason, MeetingKind
from services.runtime.decision import Emit, in_the_future, not_a_participant
from services.scheduling.domain.indirect_state import IndirectItem, ItemStatus, ReceivingAgreement
from services.scheduling.domain.meetings import _cancel
from services.scheduling.domain.model import (
    NOT_NOW,
    CaseSchedule,
    Outcome,
    ResourceBook,
    _refusal,
    _reject,
    for_actor,
    speaker_refusal,
)

PARTIES = (Role.victim, Role.offender)

# --- the release ----------------------------------------------------------------------------------


def party_side(case: CaseSchedule, person_id: str) -> Role | None:
    """The side ``person_id`` sends and receives indirect items for: a victim's or offender's own, or, for a parent
    or guardian, the side of the party under 18 they act for. ``None``: not a party (a supporter, an advocate,
    an interpreter), who neither sends nor receives items (they see nothing of the other side's data)."""
    participant = case.participant(person_id)
    if participant is None:
        return None
    if participant.role in PARTIES:
        return participant.role
    if participant.role is Role.parent_guardian and participant.supports is not None:
        supported = case.participant(participant.supports)
        if supported is not None and supported.role in PARTIES and supported.under_18:
            return supported.role
    return None


def parties_refusal(case: CaseSchedule, sender_id: str, recipient_id: str) -> str | None:
    """Why an item may not pass from ``sender_id`` to ``recipient_id``, if so: both must be parties, on opposite
    sides (DOMAIN rule 9 and "people around the participants")."""
    for person_id in (sender_id, recipient_id):
        if party_side(case, person_id) is None:
            role = participant.role if (participant := case.participant(person_id)) is not None else "stranger"
            return (
                "only a party (victim or offender, or a parent or guardian for one under 18) sends or receives "
                f"indirect items; {person_id} is a {role}"
            )
    if party_side(case, sender_id) is party_side(case, recipient_id):
        return "an item passes between the two sides (victim and offender), not within one side"
    return None


def release_refusal(
    case: CaseSchedule, item: IndirectItem, now: datetime, *, requested: bool = False, in_case_order: bool = True
) -> str | None:
    """Why ``item`` may not reach its recipient now, if so (DOMAIN rule 9, rule 1, withdrawal and hold first).
    ``requested``: the recipient has just asked for what waits for them. ``in_case_order``: we are deciding on a
    command read in the case's order on ``rj.commands`` (so every stop, hold or withdrawal sent before it has been
    read); otherwise (a fact from another topic) nothing is released: the item is left to the sweeper's
    ``ReleaseDueItems`` (``release_watch``), which is read in case order."""
    if not in_case_order:
        return "a release is decided only on a command read in case order: the sweeper's release-due decides it"
    if case.closure is not None:
        return f"case is closed ({case.closure.reason})"
    if case.held:
        return "the case is on hold for a safeguarding concern: nothing goes ahead until it is resumed"
    if case.stops_pending:
        return "a withdrawal or hold on this case is awaiting the consent service's decision: nothing goes ahead"
    if item.status is not ItemStatus.approved:
        return f"item {item.item_id} is {item.status}, not approved and waiting"
    if case.indirect.form is not ContactForm.indirect:
        return "the case is back in conference contact: items wait until a party chooses indirect contact again"
    if not case.ready:
        return "case is not ready: the consent service has not confirmed every required consent"
    if (parties := parties_refusal(case, item.sender_id, item.recipient_id)) is not None:
        return parties
    for person_id in (item.sender_id, item.recipient_id):
        if case.person_pending(person_id):
            return f"a withdrawal awaits the consent service's decision: item {item.item_id} waits for it"
        if person_id not in case.consenting:
            return f"participation consent is not current for {person_id}"
    agreement = case.indirect.agreement(item.recipient_id)
    if agreement is None or not agreement.current:
        return f"{item.recipient_id} has not agreed in advance to receive items"
    if not agreement.covers(item.sender_id):
        return f"{item.recipient_id} has not agreed to receive items from {item.sender_id}"
    if item.kind not in agreement.kinds:
        return f"{item.recipient_id} has not agreed to receive a {item.kind}"
    if requested:
        return None
    if agreement.timing is ReleaseTiming.on_request:
        return f"{item.recipient_id} receives items only when they ask for them"
    if agreement.timing is ReleaseTiming.not_before and agreement.not_before is not None:
        if now < agreement.not_before:
            return f"{item.recipient_id} asked for items not before {agreement.not_before.isoformat()}"
    return None


def release_due(
    case: CaseSchedule,
    now: datetime,
    *,
    trigger: ReleaseTrigger = ReleaseTrigger.decision,
    by: Actor = SYSTEM_SCHEDULING,
    requested_by: str | None = None,
    in_case_order: bool = True,
) -> tuple[CaseSchedule, list[Emit]]:
    """Release every waiting item nothing stands against now (``requested_by``: the recipient who asked, for
    their own items; ``in_case_order``: see ``release_refusal``)."""
    emits: list[Emit] = []
    for item in case.indirect.waiting:
        requested = requested_by is not None and item.recipient_id == requested_by
        if release_refusal(case, item, now, requested=requested, in_case_order=in_case_order) is not None:
            continue
        released = replace(item, status=ItemStatus.released, released_at=now)
        case = replace(case, indirect=case.indirect.with_item(released))
        fact = IndirectItemReleased(
            case_id=case.case_id,
            item_id=item.item_id,
            recipient_id=item.recipient_id,
            sender_id=item.sender_id,
            kind=item.kind,
            content=item.content,
            recording_ref=item.recording_ref,
            recording_sha256=item.recording_sha256,
            trigger=ReleaseTrigger.request if requested else trigger,
            released_at=now,
            released_by=by if requested else SYSTEM_SCHEDULING,
        )
        emits.append(Emit(fact, f"item-released:{item.item_id}"))
    return case, emits


def release_watch(case: CaseSchedule | None) -> list[tuple[str, datetime]]:
    """The items the release sweeper must look at, as ``(item id, when)``: approved items that a command read in
    case order would let go once their recipient's chosen time comes (timing ``not_before``: at that time), or
    at once (timing ``on_approval``, when a fact from another topic lifted the last thing it waited for: due since
    the agreement, a time that stays the same while nothing changes). Anything else standing against an item (a
    hold, a pending withdrawal, a stop, readiness, consent, the contact form, a closed case) keeps it off the
    list: the message that lifts it rewrites the list."""
    if case is None or case.closure is not None:
        return []
    watched = []
    for item in case.indirect.waiting:
        agreement = case.indirect.agreement(item.recipient_id)
        if agreement is None or agreement.timing is ReleaseTiming.on_request:
            continue
        due = agreement.not_before if agreement.timing is ReleaseTiming.not_before else agreement.agreed_at
        if due is not None and release_refusal(case, item, due) is None:
            watched.append((item.item_id, due))
    return watched


def end_participation(
    case: CaseSchedule, person_id: str, code: IndirectEndReason, command_id: str, now: datetime
) -> tuple[CaseSchedule, list[Emit]]:
    """The consent service accepted ``person_id``'s withdrawal or decline of participation (``code`` says which):
    their advance agreement to receive stops, and every item of theirs not yet released, sent or to be received,
    is withdrawn. A later consent starts afresh: they agree again, and items are submitted anew. The facts carry
    ids and the code only."""
    emits: list[Emit] = []
    agreement = case.indirect.agreement(person_id)
    mine = [
        i
        for i in case.indirect.items
        if person_id in (i.sender_id, i.recipient_id) and i.status in (ItemStatus.submitted, ItemStatus.approved)
    ]
    if agreement is not None and agreement.current:
        case = replace(case, indirect=case.indirect.with_agreement(replace(agreement, stopped_at=now)))
        withheld = [i.item_id for i in mine if i.recipient_id == person_id and i.status is ItemStatus.approved]
        stopped = ReceivingStopped(
            case_id=case.case_id,
            person_id=person_id,
            stopped_at=now,
            stopped_by=SYSTEM_SCHEDULING,
            withheld_item_ids=withheld,
            reason_code=code,
        )
        emits.append(Emit(stopped, f"receiving-stopped:{command_id}"))
    for item in mine:
        case = replace(case, indirect=case.indirect.with_item(replace(item, status=ItemStatus.withdrawn)))
        withdrawn = IndirectItemWithdrawn(
            case_id=case.case_id,
            item_id=item.item_id,
            withdrawn_at=now,
            withdrawn_by=SYSTEM_SCHEDULING,
            reason_code=code,
        )
        emits.append(Emit(withdrawn, f"item-withdrawn:{item.item_id}"))
    return case, emits


# --- commands -------------------------------------------------------------------------------------


def switch_contact_form(
    case: CaseSchedule | None, book: ResourceBook, command: SwitchContactForm, *, command_id: str, now: datetime
) -> Outcome:
    """Either party switches between a conference and indirect contact, at any point while the case is open;
    to indirect calls off every booked conference. It books nothing, so a hold or a pending withdrawal does not
    stop it."""
    refusal = (
        _speaker_refusal(command, command.person_id)
        or _refusal(case, command, books_nothing=True)
        or _party_refusal(case, command, command.person_id)
    )
    if refusal is None and command.actor.kind == "staff" and not (command.reason or "").strip():
        refusal = "staff switching the contact form for a party say why (reason)"
    if refusal is None and case is not None and case.indirect.form is command.form:
        refusal = f"the case is already in {command.form} contact"
    if refusal is not None:
        return _reject(case, book, command, command_id, now, for_actor(command, refusal))
    assert case is not None
    previous = case.indirect.form
    case = replace(case, indirect=replace(case.indirect, form=command.form))
    fact = ContactFormSwitched(
        case_id=case.case_id,
        form=command.form,
        previous_form=previous,
        person_id=command.person_id,
        switched_at=now,
        switched_by=command.actor,
        reason=command.reason,
    )
    emits = [Emit(fact, f"contact-form-switched:{command_id}")]
    if command.form is ContactForm.indirect:
        for meeting in case.pending:
            if meeting.kind is MeetingKind.conference:
                code = CancellationReason.contact_form_indirect
                case, book, cancelled = _cancel(case, book, meeting, code, command.actor, None, now)
                emits += cancelled
    return case, book, emits


def agree_to_receive(
    case: CaseSchedule | None, book: ResourceBook, command: AgreeToReceiveItems, *, command_id: str, now: datetime
) -> Outcome:
    """The recipient's advance agreement (given again, it replaces the last), naming whom it covers. It contacts no
    one by itself: what it lets go is released only as ``release_refusal`` allows."""
    refusal = _speaker_refusal(command, command.person_id) or _refusal(case, command, books_nothing=True)
    refusal = refusal or _self_or_staff(case, command, command.person_id)
    if refusal is None:
        assert case is not None
        refusal = _agreement_refusal(case, command)
    if refusal is not None:
        return _reject(case, book, command, command_id, now, for_actor(command, refusal))
    assert case is not None
    kinds = frozenset(command.kinds)
    from_ids = None if command.from_other_side else frozenset(command.from_ids)
    agreement = ReceivingAgreement(command.person_id, kinds, command.timing, command.not_before, now, None, from_ids)
    case = replace(case, indirect=case.indirect.with_agreement(agreement))
    fact = ReceivingAgreed(
        case_id=case.case_id,
        person_id=command.person_id,
        kinds=sorted(kinds),
        from_ids=sorted(from_ids or ()),
        from_other_side=command.from_other_side,
        timing=command.timing,
        not_before=command.not_before,
        agreed_at=now,
        agreed_by=command.actor,
        reason=command.reason,
    )
    return case, book, [Emit(fact, f"receiving-agreed:{command_id}")]


def stop_receiving(
    case: CaseSchedule | None, book: ResourceBook, command: StopReceivingItems, *, command_id: str, now: datetime
) -> Outcome:
    """The recipient stops receiving items: at once, no reason needed, never refused for a hold, a pending
    withdrawal or a closed case (it only stops things)."""
    refusal = _speaker_refusal(command, command.person_id) or (
        "" if case is not None else f"unknown case {command.case_id}"
    )
    refusal = refusal or _self_or_staff(case, command, command.person_id) or ""
    if refusal:
        return _reject(case, book, command, command_id, now, for_actor(command, refusal))
    assert case is not None
    agreement = case.indirect.agreement(command.person_id)
    if agreement is not None and agreement.current:
        case = replace(case, indirect=case.indirect.with_agreement(replace(agreement, stopped_at=now)))
    withheld = [i.item_id for i in case.indirect.waiting if i.recipient_id == command.person_id]
    fact = ReceivingStopped(
        case_id=case.case_id,
        person_id=command.person_id,
        stopped_at=now,
        stopped_by=command.actor,
        withheld_item_ids=withheld,
    )
    return case, book, [Emit(fact, f"receiving-stopped:{command_id}")]


def request_items(
    case: CaseSchedule | None, book: ResourceBook, command: RequestItems, *, command_id: str, now: datetime
) -> Outcome:
    """The recipient asks for what waits for them: every approved item for them that nothing else stands against
    is released now, whatever timing they chose. Staff asking for them say why. Nothing to release is refused:
    staff learn why, a participant only ``NOT_NOW`` (whether something waits, blocked by another person's
    withdrawal or consent or a hold, must never reach them: DOMAIN rule 2)."""
    refusal = _speaker_refusal(command, command.person_id) or _refusal(case, command)
    refusal = refusal or _self_or_staff(case, command, command.person_id)
    if refusal is None and command.actor.kind == "staff" and not (command.reason or "").strip():
        refusal = "staff asking for items for the recipient say why (reason)"
    if refusal is None:
        assert case is not None
        mine = [i for i in case.indirect.waiting if i.recipient_id == command.person_id]
        if not mine:
            refusal = f"no approved item is waiting for {command.person_id}"
        else:
            released, emits = release_due(case, now, by=command.actor, requested_by=command.person_id)
            if emits:
                return released, book, emits
            refusal = release_refusal(case, mine[0], now, requested=True) or "nothing can be released now"
    return _reject(case, book, command, command_id, now, for_actor(command, refusal))


def submit_item(
    case: CaseSchedule | None, book: ResourceBook, command: SubmitIndirectItem, *, command_id: str, now: datetime
) -> Outcome:
    """A party's item for a party on the other side, waiting for the facilitator's screening. Refused, a
    participant is told only ``NOT_NOW`` (the reason may be a hold or another person's pending withdrawal)."""
    refusal = (
        _speaker_refusal(command, command.sender_id)
        or _refusal(case, command)
        or _self_or_staff(case, command, command.sender_id)
        or not_a_participant(case, command.recipient_id)
        or _item_refusal(case, command)
    )
    if refusal is not None:
        return _reject(case, book, command, command_id, now, for_actor(command, refusal))
    assert case is not None
    item = IndirectItem(
        item_id=command.item_id,
        sender_id=command.sender_id,
        recipient_id=command.recipient_id,
        kind=command.kind,
        content=command.content,
        recording_ref=command.recording_ref,
        status=ItemStatus.submitted,
        submitted_at=now,
        recording_sha256=command.recording_sha256,
    )
    case = replace(case, indirect=case.indirect.with_item(item))
    fact = IndirectItemSubmitted(
        case_id=case.case_id,
        item_id=item.item_id,
        sender_id=item.sender_id,
        recipient_id=item.recipient_id,
        kind=item.kind,
        content=item.content,
        recording_ref=item.recording_ref,
        recording_sha256=item.recording_sha256,
        submitted_at=now,
        submitted_by=command.actor,
    )
    return case, book, [Emit(fact, f"item-submitted:{item.item_id}")]


def approve_item(
    case: CaseSchedule | None, book: ResourceBook, command: ApproveIndirectItem, *, command_id: str, now: datetime
) -> Outcome:
    """The facilitator approves an item's content. Refused on hold or pending a withdrawal: approve it again
    once the case goes on."""
    item = case.indirect.item(command.item_id) if case is not None else None
    refusal = _refusal(case, command) or _staff_only(command) or _no_item(item, command.item_id)
    if refusal is None and item is not None and item.status is not ItemStatus.submitted:
        refusal = f"item {command.item_id} is {item.status}: only a submitted item is approved"
    if refusal is not None:
        return _reject(case, book, command, command_id, now, refusal)
    assert case is not None and item is not None
    case = replace(case, indirect=case.indirect.with_item(replace(item, status=ItemStatus.approved)))
    fact = IndirectItemApproved(
        case_id=case.case_id,
        item_id=item.item_id,
        recording_sha256=item.recording_sha256,
        approved_at=now,
        approved_by=command.actor,
        reason=command.reason,
    )
    return case, book, [Emit(fact, f"item-approved:{item.item_id}")]


def reject_item(
    case: CaseSchedule | None, book: ResourceBook, command: RejectIndirectItem, *, command_id: str, now: datetime
) -> Outcome:
    """The facilitator rejects an item's content, saying why: it is never released. An approved item not yet
    released may be rejected too. It only stops something, so a hold does not stop it."""
    item = case.indirect.item(command.item_id) if case is not None else None
    refusal = _refusal(case, command, books_nothing=True) or _staff_only(command) or _no_item(item, command.item_id)
    if refusal is None and item is not None and item.status not in (ItemStatus.submitted, ItemStatus.approved):
        refusal = f"item {command.item_id} is {item.status}: it can no longer be rejected"
    if refusal is None and not (command.reason or "").strip():
        refusal = "rejecting an item needs a reason"
    if refusal is not None:
        return _reject(case, book, command, command_id, now, refusal)
    assert case is not None and item is not None and command.reason is not None
    case = replace(case, indirect=case.indirect.with_item(replace(item, status=ItemStatus.rejected)))
    fact = IndirectItemRejected(
        case_id=case.case_id, item_id=item.item_id, rejected_at=now, rejected_by=command.actor, reason=command.reason
    )
    return case, book, [Emit(fact, f"item-rejected:{item.item_id}")]


def withdraw_item(
    case: CaseSchedule | None, book: ResourceBook, command: WithdrawIndirectItem, *, command_id: str, now: datetime
) -> Outcome:
    """The sender (or staff for them) takes an item back before it is released, no reason needed: it is never
    released. It only stops something, so a hold or a pending withdrawal does not stop it."""
    item = case.indirect.item(command.item_id) if case is not None else None
    refusal = _refusal(case, command, books_nothing=True) or _no_item(item, command.item_id)
    if refusal is None and item is not None:
        refusal = _self_or_staff(case, command, item.sender_id)
        if refusal is None and item.status not in (ItemStatus.submitted, ItemStatus.approved):
            refusal = f"item {command.item_id} is {item.status}: only an item not yet released is taken back"
    if refusal is not None:
        # A participant cannot be told whether the item exists or whose it is: one answer for every reason.
        neutral = command.actor.kind == "participant"
        return _reject(case, book, command, command_id, now, NOT_NOW if neutral else refusal)
    assert case is not None and item is not None
    case = replace(case, indirect=case.indirect.with_item(replace(item, status=ItemStatus.withdrawn)))
    fact = IndirectItemWithdrawn(
        case_id=case.case_id, item_id=item.item_id, withdrawn_at=now, withdrawn_by=command.actor
    )
    return case, book, [Emit(fact, f"item-withdrawn:{item.item_id}")]


def release_due_items(
    case: CaseSchedule | None, book: ResourceBook, command: ReleaseDueItems, *, command_id: str, now: datetime
) -> Outcome:
    """The sweeper's word that a recipient's chosen time has come, read in case order: release what nothing stands
    against now. Only the scheduling service sends it; sent again, or too late, it does nothing."""
    if command.actor != SYSTEM_SCHEDULING:
        return _reject(case, book, command, command_id, now, "only the scheduling service's sweeper sends this")
    if case is None or case.closure is not None:
        return case, book, []
    case, emits = release_due(case, now, trigger=ReleaseTrigger.time)
    return case, book, emits


def record_delivered(
    case: CaseSchedule | None, book: ResourceBook, command: RecordItemDelivered, *, command_id: str, now: datetime
) -> Outcome:
    """Staff record that a released item reached its recipient: a record of what happened, so taken even on a
    case closed or held since."""
    item = case.indirect.item(command.item_id) if case is not None else None
    refusal = None if case is not None else f"unknown case {command.case_id}"
    refusal = refusal or _staff_only(command) or _no_item(item, command.item_id)
    if refusal is None and item is not None:
        if item.status is ItemStatus.delivered:
            refusal = f"item {command.item_id} is already recorded as delivered"
        elif item.status is not ItemStatus.released or item.released_at is None:
            refusal = f"item {command.item_id} is {item.status}, not released: it cannot have been delivered"
        elif (future := in_the_future("delivered_at", command.delivered_at, now)) is not None:
            refusal = future
        elif command.delivered_at < item.released_at:
            refusal = f"item {command.item_id} was released at {item.released_at.isoformat()}: not delivered before"
    if refusal is not None:
        return _reject(case, book, command, command_id, now, refusal)
    assert case is not None and item is not None
    case = replace(case, indirect=case.indirect.with_item(replace(item, status=ItemStatus.delivered)))
    fact = IndirectItemDelivered(
        case_id=case.case_id,
        item_id=item.item_id,
        recipient_id=item.recipient_id,
        delivered_at=command.delivered_at,
        recorded_at=now,
        recorded_by=command.actor,
    )
    return case, book, [Emit(fact, f"item-delivered:{item.item_id}")]


# --- guards ---------------------------------------------------------------------------------------


def _speaker_refusal(command: Command, person_id: str) -> str | None:
    """Checked before anything about the case: a participant acts only for themself, a system for no one."""
    if command.actor.kind == "system":
        return "a participant or staff for them decides this, not a system"
    return speaker_refusal(command, person_id)


def _self_or_staff(case: CaseSchedule | None, command: Command, person_id: str) -> str | None:
    """The command is ``person_id``'s or staff's on their behalf, and ``person_id`` is a participant. A participant's
    refusal says nothing of which (``for_actor``), but the speaker is checked first (``_speaker_refusal``)."""
    return _speaker_refusal(command, person_id) or not_a_participant(case, person_id)


def _party_refusal(case: CaseSchedule | None, command: Command, person_id: str) -> str | None:
    if (refusal := _self_or_staff(case, command, person_id)) is not None:
        return refusal
    assert case is not None
    participant = case.participant(person_id)
    if participant is not None and participant.role not in PARTIES:
        return f"only a party (victim or offender) switches the contact form; {person_id} is a {participant.role}"
    return None


def _agreement_refusal(case: CaseSchedule, command: AgreeToReceiveItems) -> str | None:
    """An advance agreement is a party's, names whom it covers, and when given by staff says why."""
    if command.actor.kind == "staff" and not (command.reason or "").strip():
        return "staff agreeing for the recipient say why (reason)"
    side = party_side(case, command.person_id)
    if side is None:
        return "only a party (victim or offender, or a parent or guardian for one under 18) receives items"
    if command.from_other_side == bool(command.from_ids):
        return "an agreement names the senders it covers (from_ids) or covers the other side (from_other_side)"
    for sender_id in command.from_ids:
        if party_side(case, sender_id) in (None, side):
            return f"{sender_id} is not a party on the other side"
    if command.timing is ReleaseTiming.not_before and command.not_before is None:
        return "timing not_before needs the date and time (not_before)"
    if command.timing is not ReleaseTiming.not_before and command.not_before is not None:
        return f"not_before applies only to timing not_before, not {command.timing}"
    return None


def _staff_only(command: Command) -> str | None:
    if command.actor.kind != "staff":
        return f"only the facilitator (staff) decides this, not a {command.actor.kind}"
    return None


def _no_item(item: IndirectItem | None, item_id: str) -> str | None:
    return f"no item {item_id} on this case" if item is None else None


def _item_refusal(case: CaseSchedule | None, command: SubmitIndirectItem) -> str | None:
    assert case is not None
    if command.sender_id == command.recipient_id:
        return "an item goes to another participant, not to its sender"
    if case.indirect.item(command.item_id) is not None:
        # Whatever it holds: an item's content is bound to its id, and never edited (a changed letter is a new item).
        return f"item {command.item_id} already exists on this case"
    if (parties := parties_refusal(case, command.sender_id, command.recipient_id)) is not None:
        return parties
    if case.indirect.form is not ContactForm.indirect:
        return "the case is in conference contact: a party switches it to indirect contact before items pass"
    if command.sender_id not in case.consenting:
        return f"participation consent is not current for {command.sender_id}"
    if command.kind is IndirectItemKind.recording:
        if not (command.recording_ref or "").strip():
            return "a recording needs a reference to where it is stored (recording_ref)"
        if command.content is not None:
            return "a recording is passed by its reference (recording_ref), not as content"
        if command.recording_sha256 is None:
            return "a recording needs the sha256 of its content (recording_sha256), so delivery sends what was approved"
    else:
        if not (command.content or "").strip():
            return f"a {command.kind} needs its text (content)"
        if command.recording_ref is not None or command.recording_sha256 is not None:
            return f"a {command.kind} has content, not a recording reference"
    return None
