"""Indirect RJ through the pure scheduling domain (DOMAIN stage 4, rule 9): the contact form, the recipient's
advance agreement and timing, the facilitator's screening, and the release that waits for all of them."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest

from schemas.commands import CommandRejected
from schemas.common import Actor
from schemas.consent import (
    PARTICIPATION,
    CaseHeld,
    CaseReadyForMeeting,
    CaseResumed,
    ConsentWithdrawn,
    PutCaseOnHold,
    RecordedThrough,
    RecordingMethod,
    WithdrawConsent,
    sharing,
)
from schemas.envelope import EventData
from schemas.indirect import (
    INDIRECT_EVENTS,
    AgreeToReceiveItems,
    ApproveIndirectItem,
    ContactForm,
    ContactFormSwitched,
    IndirectItemApproved,
    IndirectItemKind,
    IndirectItemReleased,
    IndirectItemWithdrawn,
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
from schemas.pii import pii_fields
from schemas.referral import CaseParticipant, Role
from schemas.scheduling import (
    SYSTEM_SCHEDULING,
    BookMeeting,
    CancellationReason,
    ClosureReason,
    MeetingCancelled,
    MeetingKind,
    RecordAvailability,
    RegisterFacilitator,
    RegisterVenue,
    VenueKind,
    WeeklyHours,
)
from services.scheduling import domain
from services.scheduling.domain import CaseSchedule, ResourceBook
from services.scheduling.domain.indirect import NOT_NOW
from services.scheduling.domain.model import ONLY_THEMSELF

NOW = datetime(2030, 1, 7, 8, 0, tzinfo=UTC)
STAFF = Actor(kind="staff", id="staff-7")
SYSTEM = Actor(kind="system", id="consent-service")
VICTIM, OFFENDER, SUPPORTER = "V", "O", "S"
CASE = "C1"


class Case:
    """One case driven through ``domain.handle`` as the service does, remembering every fact."""

    def __init__(self) -> None:
        self.case: CaseSchedule | None = None
        self.book = ResourceBook()
        self.facts: list[EventData] = []
        self.n = 0
        weekdays = [WeeklyHours(weekday=d, start=time(9), end=time(17)) for d in range(5)]
        for f in ("F1", "F2"):
            self.send(
                RegisterFacilitator(
                    actor=STAFF, facilitator_id=f, specialist=False, working_hours=weekdays, timezone="UTC"
                )
            )
        self.send(RegisterVenue(actor=STAFF, venue_id="H", kind=VenueKind.community, name="Hall", timezone="UTC"))
        self.send(
            CaseReadyForMeeting(
                case_id=CASE,
                participants=[
                    CaseParticipant(person_id=VICTIM, role=Role.victim, required=True),
                    CaseParticipant(person_id=OFFENDER, role=Role.offender, required=True),
                    CaseParticipant(person_id=SUPPORTER, role=Role.supporter, required=False),
                ],
                specialist_required=False,
                facilitator_ids=["F1", "F2"],
                ready_at=NOW,
                decided_by=SYSTEM,
            )
        )

    def send(self, message: EventData, now: datetime = NOW) -> list[EventData]:
        self.n += 1
        case = None if isinstance(message, RegisterFacilitator | RegisterVenue) else self.case
        after, self.book, emits = domain.handle(case, self.book, message, command_id=f"m{self.n}", now=now)
        if not isinstance(message, RegisterFacilitator | RegisterVenue):
            self.case = after
        out = [e.data for e in emits]
        self.facts += out
        return out

    @property
    def state(self) -> CaseSchedule:
        assert self.case is not None
        return self.case

    def released(self) -> list[IndirectItemReleased]:
        return [f for f in self.facts if isinstance(f, IndirectItemReleased)]


def participant(person: str) -> Actor:
    return Actor(kind="participant", id=person)


def switch(form: ContactForm = ContactForm.indirect, person: str = OFFENDER, **kw: Any) -> SwitchContactForm:
    return SwitchContactForm(
        case_id=CASE, actor=kw.pop("actor", participant(person)), person_id=person, form=form, **kw
    )


def letter(item_id: str = "L1", sender: str = OFFENDER, recipient: str = VICTIM, **kw: Any) -> SubmitIndirectItem:
    actor = kw.pop("actor", participant(sender))
    fields: dict[str, Any] = {"kind": IndirectItemKind.letter, "content": "I am sorry for what I did."} | kw
    return SubmitIndirectItem(
        case_id=CASE, actor=actor, item_id=item_id, sender_id=sender, recipient_id=recipient, **fields
    )


def agree(person: str = VICTIM, timing: ReleaseTiming = ReleaseTiming.on_approval, **kw: Any) -> AgreeToReceiveItems:
    kinds = kw.pop("kinds", list(IndirectItemKind))
    if "from_ids" not in kw:
        kw.setdefault("from_other_side", True)
    return AgreeToReceiveItems(
        case_id=CASE, actor=kw.pop("actor", participant(person)), person_id=person, kinds=kinds, timing=timing, **kw
    )


def approve(item_id: str = "L1") -> ApproveIndirectItem:
    return ApproveIndirectItem(case_id=CASE, actor=STAFF, item_id=item_id)


def rejections(facts: list[EventData]) -> list[str]:
    return [f.reason for f in facts if isinstance(f, CommandRejected)]


def indirect_case() -> Case:
    case = Case()
    assert not rejections(case.send(switch()))
    return case


def test_rule_9_an_approved_letter_is_released_only_after_the_victims_advance_agreement() -> None:
    case = indirect_case()
    assert not rejections(case.send(letter()))
    case.send(approve())
    assert case.released() == [], "approved, but the victim has not agreed to receive anything"
    case.send(agree())
    (released,) = case.released()
    assert (released.item_id, released.recipient_id, released.trigger) == ("L1", VICTIM, ReleaseTrigger.decision)
    assert released.content == "I am sorry for what I did."


def test_rule_9_an_agreed_letter_is_released_only_after_the_facilitator_approves_it() -> None:
    case = indirect_case()
    case.send(agree())
    case.send(letter())
    assert case.released() == []
    case.send(approve())
    assert [r.item_id for r in case.released()] == ["L1"]


def test_rule_9_a_rejected_letter_is_never_released_and_a_rejection_needs_a_reason() -> None:
    case = indirect_case()
    case.send(letter())
    assert rejections(case.send(RejectIndirectItem(case_id=CASE, actor=STAFF, item_id="L1"))) == [
        "rejecting an item needs a reason"
    ]
    case.send(RejectIndirectItem(case_id=CASE, actor=STAFF, item_id="L1", reason="it blames the victim"))
    assert "rejected" in rejections(case.send(approve()))[0]
    case.send(agree())
    assert case.released() == []


def test_rule_9_only_the_kinds_the_recipient_agreed_to_are_released() -> None:
    case = indirect_case()
    case.send(agree(kinds=[IndirectItemKind.letter]))
    case.send(letter("M1", kind=IndirectItemKind.message, content="hello"))
    case.send(letter("R1", kind=IndirectItemKind.recording, content=None, recording_ref="s3://rj/r1.mp4"))
    case.send(letter("L1"))
    for item in ("M1", "R1", "L1"):
        case.send(approve(item))
    assert [r.item_id for r in case.released()] == ["L1"]


def test_rule_9_stopping_receiving_takes_effect_at_once_and_needs_no_reason() -> None:
    case = indirect_case()
    case.send(letter())
    case.send(agree(timing=ReleaseTiming.on_request))
    case.send(approve())
    (stopped,) = [
        f
        for f in case.send(StopReceivingItems(case_id=CASE, actor=participant(VICTIM), person_id=VICTIM))
        if isinstance(f, ReceivingStopped)
    ]
    assert stopped.withheld_item_ids == ["L1"]
    refused = rejections(case.send(RequestItems(case_id=CASE, actor=participant(VICTIM), person_id=VICTIM)))
    assert refused == [NOT_NOW]
    assert case.released() == []
    case.send(agree())  # agreeing again lets it go
    assert [r.item_id for r in case.released()] == ["L1"]


def test_rule_9_the_recipient_chooses_when_items_arrive() -> None:
    later = NOW + timedelta(days=2)
    case = indirect_case()
    case.send(agree(timing=ReleaseTiming.not_before, not_before=later))
    case.send(letter())
    case.send(approve())
    assert case.released() == []
    after, emits = domain.release_due(case.state, later - timedelta(seconds=1), trigger=ReleaseTrigger.time)
    assert emits == []
    after, emits = domain.release_due(case.state, later, trigger=ReleaseTrigger.time)
    assert [(e.data.item_id, e.data.trigger) for e in emits] == [("L1", ReleaseTrigger.time)]  # type: ignore[attr-defined]

    on_request = indirect_case()
    on_request.send(agree(timing=ReleaseTiming.on_request))
    on_request.send(letter())
    on_request.send(approve())
    assert on_request.released() == []
    on_request.send(RequestItems(case_id=CASE, actor=participant(VICTIM), person_id=VICTIM))
    (released,) = on_request.released()
    assert released.trigger is ReleaseTrigger.request and released.released_by == participant(VICTIM)


@pytest.mark.parametrize("stopper", ["hold", "pending withdrawal", "withdrawn", "sender withdrew sharing is fine"])
def test_rule_9_nothing_is_released_while_held_pending_or_after_a_withdrawal(stopper: str) -> None:
    case = indirect_case()
    case.send(letter())
    case.send(approve())
    withdraw = WithdrawConsent(
        case_id=CASE,
        actor=participant(OFFENDER),
        person_id=OFFENDER,
        through=RecordedThrough.participant,
        method=RecordingMethod.online,
    )
    if stopper == "hold":
        case.send(PutCaseOnHold(case_id=CASE, actor=STAFF, concern="threat", raised_by="police"))
        case.send(
            CaseHeld(
                case_id=CASE, concern="threat", raised_by="police", held_at=NOW, held_by=STAFF, command_id=f"m{case.n}"
            )
        )
    elif stopper == "pending withdrawal":
        case.send(withdraw)
    elif stopper == "sender withdrew sharing is fine":
        assert not case.send(withdraw.model_copy(update={"purpose": sharing("statement")}))
        case.send(
            ConsentWithdrawn(
                case_id=CASE,
                person_id=OFFENDER,
                purpose=sharing("statement"),
                through=RecordedThrough.participant,
                method=RecordingMethod.online,
                withdrawn_at=NOW,
                withdrawn_by=STAFF,
                recorded_at=NOW,
                command_id=f"m{case.n}",
            )
        )
        assert case.state.stops_pending == () and case.state.persons_pending == ()
    elif stopper == "withdrawn":
        case.send(withdraw)
        case.send(
            ConsentWithdrawn(
                case_id=CASE,
                person_id=OFFENDER,
                purpose=PARTICIPATION,
                through=RecordedThrough.participant,
                method=RecordingMethod.online,
                withdrawn_at=NOW,
                withdrawn_by=STAFF,
                recorded_at=NOW,
                command_id=f"m{case.n}",
            )
        )
    case.send(agree())
    if stopper == "sender withdrew sharing is fine":
        assert [r.item_id for r in case.released()] == ["L1"]
        return
    assert case.released() == []
    if stopper == "hold":  # resumed and ready again: the item goes, on the sweeper's command read in case order
        case.send(CaseResumed(case_id=CASE, resumed_at=NOW, resumed_by=STAFF, reason="ok"))
        assert case.released() == []
        case.send(
            CaseReadyForMeeting(
                case_id=CASE,
                participants=list(case.state.participants),
                specialist_required=False,
                facilitator_ids=["F1", "F2"],
                ready_at=NOW,
                decided_by=SYSTEM,
            )
        )
        assert case.released() == [] and [i for i, _ in domain.release_watch(case.state)] == ["L1"]
        case.send(ReleaseDueItems(case_id=CASE, actor=SYSTEM_SCHEDULING))
        assert [r.item_id for r in case.released()] == ["L1"]


def test_switching_to_indirect_calls_off_booked_conferences_and_back_allows_them_again() -> None:
    case = Case()
    starts = NOW.replace(hour=10)

    def conference(meeting_id: str) -> BookMeeting:
        return BookMeeting(
            case_id=CASE,
            actor=STAFF,
            meeting_id=meeting_id,
            kind=MeetingKind.conference,
            starts_at=starts,
            ends_at=starts + timedelta(hours=1),
            lead_facilitator_id="F1",
            co_facilitator_id="F2",
            venue_id="H",
        )

    assert not rejections(case.send(conference("M1")))
    facts = case.send(switch(ContactForm.indirect, VICTIM))
    (switched,) = [f for f in facts if isinstance(f, ContactFormSwitched)]
    assert (switched.form, switched.previous_form, switched.person_id) == (
        ContactForm.indirect,
        ContactForm.conference,
        VICTIM,
    )
    (cancelled,) = [f for f in facts if isinstance(f, MeetingCancelled)]
    assert cancelled.reason_code is CancellationReason.contact_form_indirect
    assert "indirect contact" in rejections(case.send(conference("M2")))[0]
    assert rejections(case.send(switch(ContactForm.indirect))) == [NOT_NOW]  # a participant learns no state
    staff_again = switch(ContactForm.indirect, actor=STAFF, reason="asked by phone")
    assert "already in indirect" in rejections(case.send(staff_again))[0]
    case.send(switch(ContactForm.conference, OFFENDER))
    assert not rejections(case.send(conference("M3")))


def test_refusals_say_why_and_never_raise() -> None:
    case = Case()
    assert "conference contact" in rejections(case.send(letter(actor=STAFF)))[0]
    assert rejections(case.send(letter())) == [NOT_NOW], "a participant learns nothing of the case's state"
    case.send(switch())
    assert rejections(case.send(switch(ContactForm.conference, SUPPORTER))) == [NOT_NOW]
    by_staff = switch(ContactForm.conference, SUPPORTER, actor=STAFF, reason="asked by phone")
    assert "only a party" in rejections(case.send(by_staff))[0]
    staff_switch = switch(ContactForm.conference, VICTIM, actor=STAFF)
    assert "say why" in rejections(case.send(staff_switch))[0]
    assert rejections(
        case.send(letter(sender=VICTIM, recipient=OFFENDER).model_copy(update={"actor": participant(OFFENDER)}))
    ) == [ONLY_THEMSELF], "speaking for someone else is checked first, and says nothing of the case"
    assert "not a participant" in rejections(case.send(letter(recipient="X", actor=STAFF)))[0]
    assert "not to its sender" in rejections(case.send(letter(recipient=OFFENDER, actor=STAFF)))[0]
    assert "needs its text" in rejections(case.send(letter(content=" ", actor=STAFF)))[0]
    assert "recording_ref" in rejections(case.send(letter(kind=IndirectItemKind.recording, actor=STAFF)))[0]
    undated = agree(timing=ReleaseTiming.not_before)
    assert rejections(case.send(undated)) == [NOT_NOW]  # a participant gets one answer for every reason
    assert "needs the date" in rejections(case.send(undated.model_copy(update={"actor": STAFF, "reason": "x"})))[0]
    case.send(letter())
    assert "already exists" in rejections(case.send(letter(actor=STAFF)))[0]
    assert (
        "only the facilitator"
        in rejections(case.send(approve().model_copy(update={"actor": participant(OFFENDER)})))[0]
    )
    assert "no item" in rejections(case.send(approve("nope")))[0]
    deliver = RecordItemDelivered(case_id=CASE, actor=STAFF, item_id="L1", delivered_at=NOW)
    assert "not released" in rejections(case.send(deliver))[0]
    _, _, emits = domain.handle(None, ResourceBook(), letter(actor=STAFF), command_id="x", now=NOW)
    assert rejections([e.data for e in emits]) == [f"unknown case {CASE}"]


def test_staff_record_delivery_of_a_released_item_once() -> None:
    case = indirect_case()
    case.send(agree())
    case.send(letter())
    case.send(approve())
    deliver = RecordItemDelivered(case_id=CASE, actor=STAFF, item_id="L1", delivered_at=NOW)
    assert not rejections(case.send(deliver, now=NOW + timedelta(hours=1)))
    assert "already recorded" in rejections(case.send(deliver))[0]


def test_rule_6_every_indirect_fact_says_who_and_when_and_content_is_personal_data() -> None:
    for model in INDIRECT_EVENTS:
        who = [n for n, f in model.model_fields.items() if "Actor" in str(f.annotation)]
        when = [n for n, f in model.model_fields.items() if "datetime" in str(f.annotation).lower()]
        assert who and when, model.event_type
    assert {"content", "recording_ref"} <= pii_fields(SubmitIndirectItem)
    assert {"content", "recording_ref", "sender_id"} <= pii_fields(IndirectItemReleased)


def test_the_case_state_round_trips_as_json_with_its_indirect_part() -> None:
    case = indirect_case()
    case.send(agree(timing=ReleaseTiming.not_before, not_before=NOW + timedelta(days=1)))
    case.send(letter())
    assert CaseSchedule.from_json(case.state.to_json()) == case.state


# --- review fixes: who sends and receives, pending withdrawals, content binding, taking back, timing ---------------

SECOND_VICTIM, SECOND_OFFENDER, PARENT = "V2", "O2", "P"
DIGEST = "ab" * 32


def wider_case() -> Case:
    """A case with a second victim who is not required, a second offender, and an interpreter, in indirect contact."""
    case = Case()
    people = [
        *case.state.participants,
        CaseParticipant(person_id=SECOND_VICTIM, role=Role.victim, required=False),
        CaseParticipant(person_id=SECOND_OFFENDER, role=Role.offender, required=True),
        CaseParticipant(person_id="I", role=Role.interpreter, required=False, supports=VICTIM, language="pl"),
    ]
    case.send(
        CaseReadyForMeeting(
            case_id=CASE,
            participants=people,
            specialist_required=False,
            facilitator_ids=["F1", "F2"],
            ready_at=NOW,
            decided_by=SYSTEM,
        )
    )
    case.case = replace(case.state, consenting=frozenset(p.person_id for p in people))
    assert not rejections(case.send(switch()))
    return case


def withdrawing(person: str) -> WithdrawConsent:
    return WithdrawConsent(
        case_id=CASE,
        actor=participant(person),
        person_id=person,
        through=RecordedThrough.participant,
        method=RecordingMethod.online,
    )


def test_rule_9_a_supporter_neither_sends_nor_receives_items_and_only_across_the_sides() -> None:
    case = indirect_case()
    case.case = replace(case.state, consenting=case.state.consenting | {SUPPORTER})
    refused = rejections(case.send(letter("S1", sender=OFFENDER, recipient=SUPPORTER, actor=STAFF)))
    assert refused and "only a party" in refused[0] and "supporter" in refused[0]
    assert "only a party" in rejections(case.send(letter("S2", sender=SUPPORTER, recipient=OFFENDER, actor=STAFF)))[0]
    assert rejections(case.send(agree(SUPPORTER))) == [NOT_NOW]
    assert "only a party" in rejections(case.send(agree(SUPPORTER, actor=STAFF, reason="asked by phone")))[0]
    other = wider_case()
    assert "two sides" in rejections(other.send(letter("W1", sender=VICTIM, recipient=SECOND_VICTIM, actor=STAFF)))[0]
    # An item addressed to a supporter in state kept from before is never released either.
    from services.scheduling.domain.indirect_state import IndirectItem, ItemStatus

    stale = IndirectItem("X1", OFFENDER, SUPPORTER, IndirectItemKind.letter, "hi", None, ItemStatus.approved, NOW)
    assert "only a party" in (domain.release_refusal(case.state, stale, NOW) or "")


def test_a_parent_or_guardian_sends_and_receives_for_a_party_under_18() -> None:
    case = Case()
    child = [
        CaseParticipant(person_id=VICTIM, role=Role.victim, required=True, under_18=True),
        CaseParticipant(person_id=OFFENDER, role=Role.offender, required=True),
        CaseParticipant(person_id=PARENT, role=Role.parent_guardian, required=True, supports=VICTIM),
    ]
    case.send(
        CaseReadyForMeeting(
            case_id=CASE,
            participants=child,
            specialist_required=False,
            facilitator_ids=["F1", "F2"],
            ready_at=NOW,
            decided_by=SYSTEM,
        )
    )
    case.case = replace(case.state, consenting=frozenset({VICTIM, OFFENDER, PARENT}))
    case.send(switch())
    case.send(agree(PARENT, from_ids=[OFFENDER]))
    assert not rejections(case.send(letter(recipient=PARENT)))
    case.send(approve())
    assert [r.recipient_id for r in case.released()] == [PARENT]


@pytest.mark.parametrize("who", ["recipient", "sender"])
def test_a_withdrawal_by_a_sender_or_recipient_who_is_not_required_holds_their_items_until_the_verdict(
    who: str,
) -> None:
    case = wider_case()
    sender, recipient = (OFFENDER, SECOND_VICTIM) if who == "recipient" else (SECOND_VICTIM, OFFENDER)
    case.send(agree(recipient, ReleaseTiming.on_request))
    assert not rejections(case.send(letter(sender=sender, recipient=recipient)))
    case.send(approve())
    case.send(withdrawing(SECOND_VICTIM))  # read from rj.commands: consent has not decided it yet
    withdrawal_id = f"m{case.n}"
    refused = rejections(case.send(RequestItems(case_id=CASE, actor=participant(recipient), person_id=recipient)))
    assert refused and case.released() == [], "released while a withdrawal of the sender or recipient was pending"
    # Everything else on the case goes on: the withdrawal cannot stop the case.
    assert case.state.stops_pending == ()
    case.send(
        CommandRejected(
            case_id=CASE,
            command_id=withdrawal_id,
            command_type="rj.consent.withdraw",
            service="consent",
            reason="no",
            rejected_at=NOW,
        )
    )
    case.send(RequestItems(case_id=CASE, actor=participant(recipient), person_id=recipient))
    assert [r.item_id for r in case.released()] == ["L1"]


def test_an_accepted_withdrawal_by_a_sender_who_is_not_required_never_lets_their_items_go() -> None:
    case = wider_case()
    case.send(agree(OFFENDER))
    case.send(letter(sender=SECOND_VICTIM, recipient=OFFENDER))
    case.send(withdrawing(SECOND_VICTIM))
    withdrawal_id = f"m{case.n}"
    case.send(
        ConsentWithdrawn(
            case_id=CASE,
            person_id=SECOND_VICTIM,
            purpose=PARTICIPATION,
            through=RecordedThrough.participant,
            method=RecordingMethod.online,
            withdrawn_at=NOW,
            withdrawn_by=STAFF,
            recorded_at=NOW,
            command_id=withdrawal_id,
        )
    )
    case.send(approve())
    assert case.released() == [] and case.state.persons_pending == () and case.state.closure is None


def test_a_recording_is_bound_to_its_digest_and_an_item_id_to_its_first_content() -> None:
    case = indirect_case()
    recording = letter("R1", kind=IndirectItemKind.recording, content=None, recording_ref="s3://rj/r1.mp4")
    assert "recording_sha256" in rejections(case.send(recording.model_copy(update={"actor": STAFF})))[0]
    assert not rejections(case.send(recording.model_copy(update={"recording_sha256": DIGEST})))
    approved = case.send(approve("R1"))
    assert [f.recording_sha256 for f in approved if isinstance(f, IndirectItemApproved)] == [DIGEST]
    case.send(agree())
    (released,) = case.released()
    assert released.recording_sha256 == DIGEST
    assert "recording_sha256" in pii_fields(IndirectItemReleased)
    case.send(letter("L9"))
    assert "already exists" in rejections(case.send(letter("L9", content="Something else entirely.", actor=STAFF)))[0]
    assert "already exists" in rejections(case.send(letter("R1", content="a letter now", actor=STAFF)))[0]
    with pytest.raises(ValueError):
        recording.model_copy(update={"recording_sha256": "not-hex"}).model_validate(
            recording.model_dump() | {"recording_sha256": "not-hex"}
        )


def test_the_sender_takes_an_item_back_before_it_is_released() -> None:
    case = indirect_case()
    case.send(letter("L1"))
    case.send(approve("L1"))
    take_back = WithdrawIndirectItem(case_id=CASE, actor=participant(VICTIM), item_id="L1")
    assert rejections(case.send(take_back)) == [NOT_NOW], "whose item it is is not told"
    facts = case.send(take_back.model_copy(update={"actor": participant(OFFENDER)}))
    assert [f.item_id for f in facts if isinstance(f, IndirectItemWithdrawn)] == ["L1"]
    case.send(agree())
    assert case.released() == [], "released after its sender took it back"
    assert "only an item not yet released" in rejections(case.send(take_back.model_copy(update={"actor": STAFF})))[0]
    case.send(letter("L2"))
    case.send(approve("L2"))
    assert [r.item_id for r in case.released()] == ["L2"]
    assert (
        "only an item not yet released"
        in rejections(case.send(WithdrawIndirectItem(case_id=CASE, actor=STAFF, item_id="L2")))[0]
    )


def test_back_in_conference_contact_approved_items_wait_until_indirect_is_chosen_again() -> None:
    case = indirect_case()
    case.send(letter())
    case.send(approve())
    case.send(switch(ContactForm.conference, VICTIM))
    case.send(agree())
    assert case.released() == []
    case.send(switch(ContactForm.indirect, VICTIM))
    assert [r.item_id for r in case.released()] == ["L1"]


def test_a_refused_request_never_tells_the_recipient_whose_consent_is_missing() -> None:
    case = indirect_case()
    case.send(agree(timing=ReleaseTiming.on_request))
    case.send(letter())
    case.send(approve())
    case.case = replace(case.state, consenting=case.state.consenting - {OFFENDER})
    (refused,) = rejections(case.send(RequestItems(case_id=CASE, actor=participant(VICTIM), person_id=VICTIM)))
    assert OFFENDER not in refused and "consent" not in refused
    (for_staff,) = rejections(case.send(RequestItems(case_id=CASE, actor=STAFF, person_id=VICTIM, reason="by phone")))
    assert "consent" in for_staff


def test_an_advance_agreement_names_its_senders_and_staff_giving_it_say_why() -> None:
    case = wider_case()
    assert "reason" in rejections(case.send(agree(actor=STAFF)))[0]
    neither = agree(from_other_side=False)
    assert rejections(case.send(neither)) == [NOT_NOW]
    assert "from_ids" in rejections(case.send(neither.model_copy(update={"actor": STAFF, "reason": "by phone"})))[0]
    assert "other side" in rejections(case.send(agree(from_ids=[SECOND_VICTIM], actor=STAFF, reason="by phone")))[0]
    assert not rejections(case.send(agree(from_ids=[OFFENDER], actor=STAFF, reason="asked us by phone")))
    case.send(letter("L1", sender=OFFENDER))
    case.send(letter("L2", sender=SECOND_OFFENDER))
    case.send(approve("L1"))
    case.send(approve("L2"))
    assert [r.item_id for r in case.released()] == ["L1"], "the agreement covers only the sender it names"


def test_an_item_release_is_participant_facing() -> None:
    assert IndirectItemReleased.participant_facing


def test_a_timed_release_waits_for_a_command_read_in_case_order() -> None:
    later = NOW + timedelta(hours=1)
    case = indirect_case()
    case.send(agree(timing=ReleaseTiming.not_before, not_before=later))
    case.send(letter())
    case.send(approve())
    assert domain.release_watch(case.state) == [("L1", later)]
    # A fact from another topic after the time has come does not release it: a stop may be waiting unread.
    case.send(CaseResumed(case_id=CASE, resumed_at=later, resumed_by=STAFF, reason="x"), now=later)
    assert case.released() == []
    due = ReleaseDueItems(case_id=CASE, actor=SYSTEM_SCHEDULING)
    early = later - timedelta(seconds=1)
    assert "only the scheduling service" in rejections(case.send(due.model_copy(update={"actor": STAFF}), now=early))[0]
    case.send(due, now=early)
    assert case.released() == []
    case.send(due, now=later)
    (released,) = case.released()
    assert released.trigger is ReleaseTrigger.time
    assert case.send(due, now=later) == [], "a repeated release-due does nothing"
    assert domain.release_watch(case.state) == []


def test_the_release_watch_lists_only_what_waits_for_time_alone() -> None:
    later = NOW + timedelta(hours=1)
    case = indirect_case()
    case.send(agree(timing=ReleaseTiming.not_before, not_before=later))
    case.send(letter())
    assert domain.release_watch(case.state) == [], "not approved yet"
    case.send(approve())
    assert domain.release_watch(case.state) == [("L1", later)]
    for blocked in (
        replace(case.state, held=True),
        replace(case.state, ready=False),
        replace(case.state, closure=domain.CaseClosure(ClosureReason.withdrawn, NOW)),
        replace(case.state, consenting=frozenset({VICTIM})),
    ):
        assert domain.release_watch(blocked) == []
    case.send(StopReceivingItems(case_id=CASE, actor=participant(VICTIM), person_id=VICTIM))
    assert domain.release_watch(case.state) == []


# --- review fixes: releases only in case order, neutral refusals, participation ending, staff reasons -------------


def _consent_rejected(command_id: str) -> CommandRejected:
    return CommandRejected(
        case_id=CASE,
        command_id=command_id,
        command_type="rj.consent.withdraw",
        service="consent",
        reason="no",
        rejected_at=NOW,
    )


def _freed_by_a_fact() -> Case:
    """An approved letter for the second victim (immediate timing) held by their pending withdrawal, which consent's
    rejection (a fact on rj.consent) then lifts."""
    case = wider_case()
    case.send(agree(SECOND_VICTIM))
    case.send(letter(sender=OFFENDER, recipient=SECOND_VICTIM))
    case.send(withdrawing(SECOND_VICTIM))
    withdrawal_id = f"m{case.n}"
    case.send(approve())
    assert case.released() == []
    case.send(_consent_rejected(withdrawal_id))
    return case


def test_rule_9_a_fact_that_lifts_the_last_obstacle_releases_nothing_by_itself() -> None:
    """A stop-receiving (or a withdrawal of the item, a rejection, a switch back) may be unread on rj.commands
    behind it: the item goes on the release watch, due now, for the sweeper's command read in case order."""
    case = _freed_by_a_fact()
    assert case.released() == [], "released on a fact from rj.consent, before rj.commands was read up to it"
    assert [item for item, _ in domain.release_watch(case.state)] == ["L1"]
    assert case.send(approve("nope")) and case.released() == [], "a rejected command releases nothing"
    case.send(ReleaseDueItems(case_id=CASE, actor=SYSTEM_SCHEDULING))
    (released,) = case.released()
    assert released.item_id == "L1"


@pytest.mark.parametrize("unread", ["stop", "withdraw item", "reject item", "switch back"])
def test_rule_9_what_was_sent_before_the_sweepers_command_is_read_before_it_releases(unread: str) -> None:
    case = _freed_by_a_fact()
    command: EventData = {
        "stop": StopReceivingItems(case_id=CASE, actor=participant(SECOND_VICTIM), person_id=SECOND_VICTIM),
        "withdraw item": WithdrawIndirectItem(case_id=CASE, actor=participant(OFFENDER), item_id="L1"),
        "reject item": RejectIndirectItem(case_id=CASE, actor=STAFF, item_id="L1", reason="it blames"),
        "switch back": switch(ContactForm.conference, OFFENDER),
    }[unread]
    assert not rejections(case.send(command))
    case.send(ReleaseDueItems(case_id=CASE, actor=SYSTEM_SCHEDULING))
    assert case.released() == []


def test_participants_get_one_neutral_refusal_and_staff_the_reason() -> None:
    case = indirect_case()
    case.send(agree(timing=ReleaseTiming.on_request))
    asking = RequestItems(case_id=CASE, actor=participant(VICTIM), person_id=VICTIM)
    nothing_waiting = rejections(case.send(asking))
    case.send(letter())
    case.send(approve())
    case.send(withdrawing(OFFENDER))  # pending: must not reach the victim
    blocked = rejections(case.send(asking))
    submitted = rejections(case.send(letter("L2", sender=VICTIM, recipient=OFFENDER)))
    assert nothing_waiting == blocked == submitted == [NOT_NOW], "a participant learns nothing of the case's state"
    for_staff = rejections(case.send(asking.model_copy(update={"actor": STAFF, "reason": "asked by phone"})))
    assert "withdrawal" in for_staff[0]
    assert "withdrawal" in rejections(case.send(letter("L2", sender=VICTIM, recipient=OFFENDER, actor=STAFF)))[0]


def test_staff_asking_for_items_for_the_recipient_say_why() -> None:
    case = indirect_case()
    case.send(agree(timing=ReleaseTiming.on_request))
    case.send(letter())
    case.send(approve())
    asking = RequestItems(case_id=CASE, actor=STAFF, person_id=VICTIM)
    assert "reason" in rejections(case.send(asking))[0]
    assert case.released() == []
    case.send(asking.model_copy(update={"reason": "the victim asked us by phone"}))
    assert [r.item_id for r in case.released()] == ["L1"]


@pytest.mark.parametrize("ending", ["withdrawn", "declined"])
def test_an_accepted_withdrawal_or_decline_ends_that_persons_agreement_and_items(ending: str) -> None:
    from schemas.consent import ConsentDeclined, ConsentGiven
    from schemas.indirect import IndirectEndReason

    case = wider_case()
    case.send(agree(SECOND_VICTIM, ReleaseTiming.on_request))
    case.send(agree(OFFENDER, ReleaseTiming.on_request))
    case.send(letter("L1", sender=OFFENDER, recipient=SECOND_VICTIM))
    case.send(letter("L2", sender=SECOND_VICTIM, recipient=OFFENDER))
    case.send(approve("L1"))
    case.send(withdrawing(SECOND_VICTIM))
    said = dict(through=RecordedThrough.participant, method=RecordingMethod.online, recorded_at=NOW)
    verdict: EventData = (
        ConsentWithdrawn(
            case_id=CASE,
            person_id=SECOND_VICTIM,
            purpose=PARTICIPATION,
            withdrawn_at=NOW,
            withdrawn_by=STAFF,
            command_id=f"m{case.n}",
            **said,
        )
        if ending == "withdrawn"
        else ConsentDeclined(
            case_id=CASE,
            person_id=SECOND_VICTIM,
            purpose=PARTICIPATION,
            declined_at=NOW,
            declined_by=STAFF,
            command_id=f"m{case.n}",
            **said,
        )
    )
    facts = case.send(verdict)
    code = (
        IndirectEndReason.participation_withdrawn if ending == "withdrawn" else IndirectEndReason.participation_declined
    )
    (stopped,) = [f for f in facts if isinstance(f, ReceivingStopped)]
    assert (stopped.person_id, stopped.withheld_item_ids, stopped.reason_code) == (SECOND_VICTIM, ["L1"], code)
    withdrawn = [f for f in facts if isinstance(f, IndirectItemWithdrawn)]
    assert sorted(f.item_id for f in withdrawn) == ["L1", "L2"] and {f.reason_code for f in withdrawn} == {code}
    assert case.state.closure is None
    # A later consent starts afresh: nothing agreed or sent before it goes through.
    case.send(
        ConsentGiven(case_id=CASE, person_id=SECOND_VICTIM, purpose=PARTICIPATION, given_at=NOW, given_by=STAFF, **said)
    )
    assert SECOND_VICTIM in case.state.consenting
    case.send(RequestItems(case_id=CASE, actor=participant(SECOND_VICTIM), person_id=SECOND_VICTIM))
    assert rejections(case.send(approve("L2")))
    case.send(RequestItems(case_id=CASE, actor=participant(OFFENDER), person_id=OFFENDER))
    assert case.released() == []
    case.send(agree(SECOND_VICTIM, ReleaseTiming.on_request))
    case.send(RequestItems(case_id=CASE, actor=participant(SECOND_VICTIM), person_id=SECOND_VICTIM))
    assert case.released() == [], "their items before the withdrawal stay withdrawn"


def test_an_items_content_has_a_maximum_length() -> None:
    from pydantic import ValidationError

    from schemas.indirect import CONTENT_MAX_CHARS

    letter(content="x" * CONTENT_MAX_CHARS)
    with pytest.raises(ValidationError):
        letter(content="x" * (CONTENT_MAX_CHARS + 1))


# --- what a participant's refusal tells them ----------------------------------------------------------


def test_a_participant_speaking_for_someone_else_is_told_only_that_whoever_the_other_is() -> None:
    """The speaker is checked first: a participant acting for anyone else, on the case or not, on a case that
    exists or not, gets the same answer (never "stranger-9 is not a participant" beside "V cannot act for O")."""
    case = indirect_case()
    for person in (OFFENDER, "stranger-9"):
        commands = [
            StopReceivingItems(case_id=CASE, actor=participant(VICTIM), person_id=person),
            agree(person, actor=participant(VICTIM)),
            switch(ContactForm.conference, person, actor=participant(VICTIM)),
            letter(sender=person, recipient=OFFENDER, actor=participant(VICTIM)),
            RequestItems(case_id=CASE, actor=participant(VICTIM), person_id=person),
            RecordAvailability(case_id=CASE, actor=participant(VICTIM), person_id=person, windows=[]),
        ]
        for command in commands:
            assert rejections(case.send(command)) == [ONLY_THEMSELF], command.event_type
    unknown = Case()
    unknown.case = None
    stop = StopReceivingItems(case_id="no-such-case", actor=participant("stranger-9"), person_id=VICTIM)
    assert rejections(unknown.send(stop)) == [ONLY_THEMSELF]


def test_a_participant_is_told_one_neutral_refusal_for_every_other_reason() -> None:
    """Not on the case, no such case, a party or not, someone on the other side or not, the item theirs or not or
    there at all: a participant acting for themself learns none of it; staff get the precise reason."""
    case = indirect_case()
    nobody = Case()
    nobody.case = None
    stranger = participant("stranger-9")
    refused = [
        case.send(StopReceivingItems(case_id=CASE, actor=stranger, person_id="stranger-9")),
        nobody.send(StopReceivingItems(case_id="no-such-case", actor=participant(VICTIM), person_id=VICTIM)),
        case.send(agree("stranger-9")),
        case.send(agree(SUPPORTER)),  # not a party
        case.send(agree(VICTIM, from_ids=[SUPPORTER, "nobody"])),  # which ids are parties on the other side
        case.send(agree(VICTIM, from_ids=[VICTIM])),
        case.send(switch(ContactForm.conference, "stranger-9")),
        case.send(switch(ContactForm.indirect, VICTIM)),  # already so
        case.send(switch(ContactForm.conference, SUPPORTER)),  # not a party
        case.send(WithdrawIndirectItem(case_id=CASE, actor=participant(VICTIM), item_id="no-such-item")),
        case.send(RecordAvailability(case_id=CASE, actor=stranger, person_id="stranger-9", windows=[])),
        nobody.send(
            RecordAvailability(case_id="no-such-case", actor=participant(VICTIM), person_id=VICTIM, windows=[])
        ),
    ]
    assert [rejections(r) for r in refused] == [[NOT_NOW]] * len(refused)
    case.send(letter())
    taken_by_another = WithdrawIndirectItem(case_id=CASE, actor=participant(VICTIM), item_id="L1")
    assert rejections(case.send(taken_by_another)) == [NOT_NOW], "whose item it is, or that it exists, is not told"
    # Staff still learn why.
    assert (
        "not a participant"
        in rejections(case.send(StopReceivingItems(case_id=CASE, actor=STAFF, person_id="stranger-9")))[0]
    )
    assert (
        "not a party on the other side"
        in rejections(case.send(agree(VICTIM, from_ids=[SUPPORTER], actor=STAFF, reason="asked by phone")))[0]
    )
    assert "no item" in rejections(case.send(WithdrawIndirectItem(case_id=CASE, actor=STAFF, item_id="nope")))[0]
    assert (
        "unknown case"
        in rejections(nobody.send(StopReceivingItems(case_id="no-such-case", actor=STAFF, person_id=VICTIM)))[0]
    )
