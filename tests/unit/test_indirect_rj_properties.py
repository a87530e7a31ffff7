"""Indirect RJ with withdrawal and hold first, under any delay between the topics (DOMAIN rule 9, with rules 1
and 2): the world of ``test_withdrawal_first_properties`` (consent and scheduling each reading each topic at
their own pace), plus indirect RJ commands and the release sweeper firing at any time.

For every ``rj.indirect.item-released`` (R), at the point scheduling emitted it, having read the commands before
position p of the case's command order:
- the facilitator's approval of the item came before R, and no rejection of it did; R is the item's only release;
- the recipient's latest word before R was an advance agreement (not a stop) covering the item's kind, and its
  timing allowed R: an immediate one, a not-before time that had come, or the recipient's own request;
- no withdrawal or decline of participation by a party, nor a hold, sent before p was still awaiting the
  consent service's verdict when R was emitted; none sent before p was accepted (a hold: unless the case was
  resumed before R); and the case had not been closed before R.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from schemas.commands import CommandRejected
from schemas.common import Actor
from schemas.consent import (
    PARTICIPATION,
    CaseHeld,
    CaseResumed,
    CaseWithdrawn,
    ConsentDeclined,
    ConsentWithdrawn,
    DeclineConsent,
    PutCaseOnHold,
    WithdrawConsent,
)
from schemas.envelope import EventData
from schemas.indirect import (
    AgreeToReceiveItems,
    ApproveIndirectItem,
    ContactForm,
    IndirectItemApproved,
    IndirectItemKind,
    IndirectItemRejected,
    IndirectItemReleased,
    ReceivingAgreed,
    ReceivingStopped,
    RejectIndirectItem,
    ReleaseTiming,
    ReleaseTrigger,
    RequestItems,
    StopReceivingItems,
    SubmitIndirectItem,
    SwitchContactForm,
)
from schemas.scheduling import CaseClosed, CloseCase, ClosureReason
from services.scheduling import domain as scheduling
from tests.unit.test_withdrawal_first_properties import (
    CASE,
    COMMANDS,
    NOW,
    OFFENDER,
    SETTINGS,
    STAFF,
    VICTIM,
    World,
    command,
    decision,
    reader,
    ready_world,
)

PARTIES = (VICTIM, OFFENDER)
ITEMS = ("L1", "L2", "L3")
LATER = NOW + timedelta(hours=2)


@dataclass
class IndirectWorld(World):
    """The world, remembering for each fact scheduling's position in ``rj.commands`` when it was emitted."""

    position: list[int] = field(default_factory=list)  # parallel to ``emitted``

    def deliver(self, service: str, topic: str) -> None:
        before = len(self.emitted)
        super().deliver(service, topic)
        self.position += [self.read.get(("scheduling", COMMANDS), 0)] * (len(self.emitted) - before)

    def sweep(self, hours: float) -> None:
        """The release sweeper, at ``hours`` after NOW, on scheduling's state as it is."""
        schedule = self.schedules.get(CASE)
        if schedule is None:
            return
        self.schedules[CASE], emits = scheduling.release_due(
            schedule, NOW + timedelta(hours=hours), trigger=ReleaseTrigger.time
        )
        for emit in emits:
            self.emitted.append(_fact(emit.data))
            self.position.append(self.read.get(("scheduling", COMMANDS), 0))
            self.publish("rj.scheduling", emit.data)


def _fact(data: EventData) -> Any:
    from tests.unit.test_withdrawal_first_properties import Fact

    return Fact(data, "sweeper")


def as_party(person: str, themself: bool) -> Actor:
    return Actor(kind="participant", id=person) if themself else STAFF


parties = st.sampled_from(PARTIES)
items = st.sampled_from(ITEMS)  # L1 and L2 are submitted by ``prefix``; L3 by a step, if at all
indirect_command = st.one_of(
    st.builds(
        lambda i, sender, kind: SubmitIndirectItem(
            case_id=CASE,
            actor=Actor(kind="participant", id=sender),
            item_id=i,
            sender_id=sender,
            recipient_id=VICTIM if sender == OFFENDER else OFFENDER,
            kind=kind,
            content="sorry",
        ),
        items,
        parties,
        st.sampled_from((IndirectItemKind.letter, IndirectItemKind.message)),
    ),
    st.builds(lambda i: ApproveIndirectItem(case_id=CASE, actor=STAFF, item_id=i), items),
    st.builds(lambda i: RejectIndirectItem(case_id=CASE, actor=STAFF, item_id=i, reason="blames"), items),
    st.builds(
        lambda p, timing, kinds, themself: AgreeToReceiveItems(
            case_id=CASE,
            actor=as_party(p, themself),
            person_id=p,
            kinds=kinds,
            timing=timing,
            not_before=LATER if timing is ReleaseTiming.not_before else None,
        ),
        parties,
        st.sampled_from(list(ReleaseTiming)),
        st.sampled_from(([IndirectItemKind.letter], [IndirectItemKind.message], list(IndirectItemKind))),
        st.booleans(),
    ),
    st.builds(lambda p: StopReceivingItems(case_id=CASE, actor=Actor(kind="participant", id=p), person_id=p), parties),
    st.builds(lambda p: RequestItems(case_id=CASE, actor=Actor(kind="participant", id=p), person_id=p), parties),
    st.builds(
        lambda p, form: SwitchContactForm(case_id=CASE, actor=Actor(kind="participant", id=p), person_id=p, form=form),
        parties,
        st.sampled_from(list(ContactForm)),
    ),
)
step = st.one_of(
    st.tuples(st.just("send"), command),
    st.tuples(st.just("send"), st.builds(lambda p: decision("withdraw", p), parties)),
    st.tuples(
        st.just("send"),
        st.just(CloseCase(case_id=CASE, actor=STAFF, closure_reason=ClosureReason.not_suitable, reason="unsafe")),
    ),
    st.tuples(st.just("send"), indirect_command),
    st.tuples(st.just("send"), indirect_command),
    st.tuples(st.just("send"), st.builds(lambda i: ApproveIndirectItem(case_id=CASE, actor=STAFF, item_id=i), items)),
    st.tuples(st.just("read"), reader),
    st.tuples(st.just("sweep"), st.sampled_from((0.0, 1.0, 3.0))),
)


def _follows(data: EventData) -> bool:
    """A command scheduling holds the case pending for: a party's participation withdrawal or decline, a hold."""
    if isinstance(data, PutCaseOnHold):
        return True
    return (
        isinstance(data, WithdrawConsent | DeclineConsent)
        and data.purpose == PARTICIPATION
        and (data.person_id in PARTIES)
    )


def check_releases(world: IndirectWorld) -> int:
    followed = [(i, m) for i, (m, data) in enumerate(world.logs[COMMANDS]) if _follows(data)]
    facts = world.emitted
    released_items: list[str] = []
    for r, fact in enumerate(facts):
        release = fact.data
        if not isinstance(release, IndirectItemReleased):
            continue
        before = [f.data for f in facts[:r]]
        assert release.item_id not in released_items, f"{release.item_id} released twice"
        released_items.append(release.item_id)
        # The facilitator approved it, and did not reject it.
        assert any(isinstance(f, IndirectItemApproved) and f.item_id == release.item_id for f in before)
        assert not any(isinstance(f, IndirectItemRejected) and f.item_id == release.item_id for f in before)
        # The recipient's latest word was an advance agreement covering its kind, with timing that allowed it.
        words = [
            f
            for f in before
            if isinstance(f, ReceivingAgreed | ReceivingStopped) and f.person_id == release.recipient_id
        ]
        assert words and isinstance(words[-1], ReceivingAgreed), "released without a current advance agreement"
        agreed = words[-1]
        assert release.kind in agreed.kinds
        if agreed.timing is ReleaseTiming.on_request:
            assert release.trigger is ReleaseTrigger.request
        if agreed.timing is ReleaseTiming.not_before and release.trigger is not ReleaseTrigger.request:
            assert agreed.not_before is not None and release.released_at >= agreed.not_before
        # Nothing while closed, pending, held or after a withdrawal, in the case's command order.
        assert not any(isinstance(f, CaseClosed) for f in before), "released on a closed case"
        p = world.position[r]
        for i, message_id in followed:
            if i >= p:
                continue
            rejected = any(
                isinstance(f, CommandRejected) and f.service == "consent" and f.command_id == message_id for f in before
            )
            accepted = [
                k
                for k, f in enumerate(facts[:r])
                if f.cause == message_id
                and isinstance(f.data, CaseWithdrawn | CaseHeld | ConsentWithdrawn | ConsentDeclined)
                and (not isinstance(f.data, ConsentWithdrawn | ConsentDeclined) or f.data.person_id in PARTIES)
            ]
            assert rejected or accepted, "released while a withdrawal or hold sent before it awaited its verdict"
            for k in accepted:
                if isinstance(facts[k].data, CaseHeld):
                    assert any(isinstance(f.data, CaseResumed) for f in facts[k:r]), "released while on hold"
                else:
                    raise AssertionError("released after a withdrawal the consent service accepted")
    return len(released_items)


def run(steps: list[tuple[Any, ...]], tail: list[Any]) -> IndirectWorld:
    base = ready_world()
    world = IndirectWorld(**{k: v for k, v in vars(base).items()})
    world.position = [0] * len(world.emitted)
    for kind, arg in steps:
        if kind == "send":
            world.publish(COMMANDS, arg)
        elif kind == "read":
            world.deliver(*arg)
        else:
            world.sweep(arg)
    world.drain(tail)
    world.sweep(3.0)
    return world


def prefix(victim_timing: ReleaseTiming, offender_timing: ReleaseTiming) -> list[tuple[str, EventData]]:
    """Indirect contact, both parties' advance agreements and two items, sent (not yet read) before the rest: so
    that releases are common, and race everything else."""

    def agreeing(person: str, timing: ReleaseTiming) -> AgreeToReceiveItems:
        not_before = LATER if timing is ReleaseTiming.not_before else None
        return AgreeToReceiveItems(
            case_id=CASE,
            actor=STAFF,
            person_id=person,
            kinds=list(IndirectItemKind),
            timing=timing,
            not_before=not_before,
        )

    def submitting(item_id: str, sender: str, recipient: str) -> SubmitIndirectItem:
        return SubmitIndirectItem(
            case_id=CASE,
            actor=STAFF,
            item_id=item_id,
            sender_id=sender,
            recipient_id=recipient,
            kind=IndirectItemKind.letter,
            content="sorry",
        )

    switch = SwitchContactForm(
        case_id=CASE, actor=Actor(kind="participant", id=VICTIM), person_id=VICTIM, form=ContactForm.indirect
    )
    messages: list[EventData] = [
        switch,
        agreeing(VICTIM, victim_timing),
        agreeing(OFFENDER, offender_timing),
        submitting("L1", OFFENDER, VICTIM),
        submitting("L2", VICTIM, OFFENDER),
    ]
    return [("send", m) for m in messages]


timings = st.sampled_from(list(ReleaseTiming))


_READ_COMMANDS = ("read", ("scheduling", COMMANDS))


@SETTINGS
@example(  # the race the pending guard is for: scheduling has read a withdrawal the consent service has not decided
    # yet when the victim's chosen time comes
    victim_timing=ReleaseTiming.not_before,
    offender_timing=ReleaseTiming.on_approval,
    opening=[],
    steps=[
        ("send", ApproveIndirectItem(case_id=CASE, actor=STAFF, item_id="L1")),
        ("send", decision("withdraw", OFFENDER)),
        *[_READ_COMMANDS] * 7,
        ("sweep", 3.0),
    ],
    tail=[],
)
@example(  # a hold the consent service accepted, heard by scheduling before the victim's chosen time comes
    victim_timing=ReleaseTiming.not_before,
    offender_timing=ReleaseTiming.on_approval,
    opening=[],
    steps=[
        ("send", ApproveIndirectItem(case_id=CASE, actor=STAFF, item_id="L1")),
        ("send", PutCaseOnHold(case_id=CASE, actor=STAFF, concern="a threat", raised_by="the police")),
        *[_READ_COMMANDS] * 7,
        *[("read", ("consent", COMMANDS))] * 7,
        *[("read", ("scheduling", "rj.consent"))] * 20,
        ("sweep", 3.0),
    ],
    tail=[],
)
@given(
    victim_timing=timings,
    offender_timing=timings,
    opening=st.lists(st.tuples(st.just("send"), indirect_command), max_size=6),
    steps=st.lists(step, min_size=5, max_size=60),
    tail=st.lists(reader, max_size=20),
)
def test_rule_9_no_item_is_released_without_agreement_approval_and_consent_under_any_delay(
    victim_timing: ReleaseTiming,
    offender_timing: ReleaseTiming,
    opening: list[tuple[Any, ...]],
    steps: list[tuple[Any, ...]],
    tail: list[Any],
) -> None:
    world = run([*prefix(victim_timing, offender_timing), *opening, *steps], tail)
    check_releases(world)


def test_the_model_does_release_an_item_when_everything_allows_it() -> None:
    """The property above is not vacuous: the same world releases an agreed, approved letter."""
    steps: list[tuple[Any, ...]] = [
        ("send", SwitchContactForm(case_id=CASE, actor=STAFF, person_id=VICTIM, form=ContactForm.indirect, reason="x")),
        (
            "send",
            AgreeToReceiveItems(
                case_id=CASE,
                actor=STAFF,
                person_id=VICTIM,
                kinds=[IndirectItemKind.letter],
                timing=ReleaseTiming.not_before,
                not_before=LATER,
            ),
        ),
        (
            "send",
            SubmitIndirectItem(
                case_id=CASE,
                actor=STAFF,
                item_id="L1",
                sender_id=OFFENDER,
                recipient_id=VICTIM,
                kind=IndirectItemKind.letter,
                content="sorry",
            ),
        ),
        ("send", ApproveIndirectItem(case_id=CASE, actor=STAFF, item_id="L1")),
        ("sweep", 1.0),
    ]
    world = run(steps, [])
    assert check_releases(world) == 1
    (release,) = [f.data for f in world.emitted if isinstance(f.data, IndirectItemReleased)]
    assert release.trigger is ReleaseTrigger.time and release.released_at == NOW + timedelta(hours=3)
