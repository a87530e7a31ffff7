"""Indirect RJ with withdrawal and hold first, under any delay between the topics (DOMAIN rule 9, with rules 1
and 2): the world of ``test_withdrawal_first_properties`` (consent and scheduling each reading each topic at
their own pace), plus indirect RJ commands and the release sweeper firing at any time.

The sweeper does not release anything itself: it only publishes ``rj.indirect.release-due`` to ``rj.commands``
for a case whose ``release_watch`` has an item due, and scheduling decides when it reads that command.

For every ``rj.indirect.item-released`` (R), with p the number of the case's commands published before the
command whose reading emitted R (every command published before the sweeper's, for a release by the sweeper; for
a release emitted on reading anything else, every command published by then, read or not):
- it passes between the victim and the offender (never to or from a supporter);
- the facilitator's approval of the item came before R, and no rejection of it did; R is the item's only release;
- the recipient's latest word before R was an advance agreement (not a stop) covering the item's kind, and its
  timing allowed R: an immediate one, a not-before time that had come, or the recipient's own request; and no
  stop-receiving by the recipient among the first p commands went without a later agreement read before R; the
  agreement covers the item's sender;
- the latest switch of the contact form among the first p commands that scheduling did not refuse was to
  indirect contact; no withdrawal of the item by its sender nor rejection by the facilitator among them went
  unrefused;
- among the consent facts scheduling had read before R: the sender's and the recipient's latest participation
  decision was a consent, the latest readiness word was "ready", the latest hold word was not "held"; and after an
  accepted withdrawal or decline by either of them, the item and the recipient's agreement came from commands
  sent after it (a later consent starts afresh);
- no re-assessment finding the case unsafe, nor addition of a parent or guardian, among the first p commands was
  awaiting the consent service's verdict when R was emitted, and one it accepted was followed by its finding the
  case ready again before R; the same holds for every meeting booked, rescheduled, held or agreed (judged by the
  command that did it);
- no withdrawal or decline of participation by a party, by the item's sender or recipient (required or not),
  nor a hold, among the first p commands was still awaiting the consent service's verdict when R was emitted;
  none was accepted (a hold: unless the case was resumed before R); and the case had not been closed before R.
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
    CaseReadinessLost,
    CaseReadyForMeeting,
    CaseResumed,
    CaseWithdrawn,
    ConsentDeclined,
    ConsentGiven,
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
    IndirectItemSubmitted,
    ReceivingAgreed,
    ReceivingStopped,
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
from schemas.referral import CaseParticipant, Role
from schemas.scheduling import (
    SYSTEM_SCHEDULING,
    CaseClosed,
    CloseCase,
    ClosureReason,
    RegisterFacilitator,
    RegisterVenue,
)
from services.scheduling import domain as scheduling
from tests.unit.test_withdrawal_first_properties import (
    CASE,
    COMMANDS,
    CONSENT,
    NOW,
    OFFENDER,
    SECOND_GUARDIAN,
    SETTINGS,
    STAFF,
    SUPPORTER,
    UNSAFE,
    VICTIM,
    World,
    adding,
    booking,
    check_readiness_first,
    command,
    decision,
    reader,
    readiness_first,
    ready_world,
)

CONSENT_WORDS = (ConsentGiven, ConsentWithdrawn, ConsentDeclined)
SECOND_VICTIM = "V2"  # a victim who is not required: their withdrawal cannot stop the case
PARTIES = (VICTIM, OFFENDER)
VICTIMS = (VICTIM, SECOND_VICTIM)
PEOPLE = (VICTIM, OFFENDER, SUPPORTER, SECOND_VICTIM)  # the supporter may try to send, receive and withdraw too
ITEMS = ("L1", "L2", "L3")
LATER = NOW + timedelta(hours=2)


@dataclass
class IndirectWorld(World):
    """The world with a clock the sweeper moves on, remembering for each fact p: the number of ``rj.commands``
    messages published before the command whose reading emitted it (scheduling's position in the topic)."""

    position: list[int] = field(default_factory=list)  # parallel to ``emitted``
    published: list[int] = field(default_factory=list)  # rj.commands messages published by then, read or not
    consent_read: list[int] = field(default_factory=list)  # scheduling's position in rj.consent by then
    clock: float = 0.0  # hours after NOW

    def deliver(self, service: str, topic: str) -> None:
        before = len(self.emitted)
        super().deliver(service, topic)
        new = len(self.emitted) - before
        self.position += [self.read.get(("scheduling", COMMANDS), 0)] * new
        self.published += [len(self.logs[COMMANDS])] * new
        self.consent_read += [self.read.get(("scheduling", CONSENT), 0)] * new

    def scheduling_takes(self, message_id: str, data: EventData) -> list[Any]:
        now = NOW + timedelta(hours=self.clock)
        subject = scheduling.subject_of(data)
        if isinstance(data, RegisterFacilitator | RegisterVenue):
            return super().scheduling_takes(message_id, data)
        after, self.book, emits = scheduling.handle(
            self.schedules.get(subject), self.book, data, command_id=message_id, now=now
        )
        self.schedules[subject] = after
        return emits

    def sweep(self, hours: float) -> None:
        """The release sweeper, at ``hours`` after NOW: what ``release_watch`` (the store's table) lists as due is
        asked about, by a command published to ``rj.commands`` behind whatever is already there."""
        self.clock = max(self.clock, hours)
        now = NOW + timedelta(hours=self.clock)
        if any(due <= now for _, due in scheduling.release_watch(self.schedules.get(CASE))):
            self.publish(COMMANDS, ReleaseDueItems(case_id=CASE, actor=SYSTEM_SCHEDULING))


def as_party(person: str, themself: bool) -> Actor:
    return Actor(kind="participant", id=person) if themself else STAFF


parties = st.sampled_from(PARTIES)
people = st.sampled_from(PEOPLE)
items = st.sampled_from(ITEMS)  # L1 and L2 are submitted by ``prefix``; L3 by a step, if at all
indirect_command = st.one_of(
    st.builds(
        lambda i, sender, to, kind: SubmitIndirectItem(
            case_id=CASE,
            actor=Actor(kind="participant", id=sender),
            item_id=i,
            sender_id=sender,
            recipient_id=to if to != sender else (VICTIM if sender == OFFENDER else OFFENDER),
            kind=kind,
            content="sorry",
        ),
        items,
        people,
        people,
        st.sampled_from((IndirectItemKind.letter, IndirectItemKind.message)),
    ),
    st.builds(
        lambda i, p: WithdrawIndirectItem(case_id=CASE, actor=Actor(kind="participant", id=p), item_id=i), items, people
    ),
    st.builds(lambda i: ApproveIndirectItem(case_id=CASE, actor=STAFF, item_id=i), items),
    st.builds(lambda i: RejectIndirectItem(case_id=CASE, actor=STAFF, item_id=i, reason="blames"), items),
    st.builds(
        lambda p, timing, kinds, themself, from_ids: AgreeToReceiveItems(
            case_id=CASE,
            actor=as_party(p, themself),
            person_id=p,
            kinds=kinds,
            from_ids=from_ids or [],
            from_other_side=from_ids is None,
            timing=timing,
            not_before=LATER if timing is ReleaseTiming.not_before else None,
            reason=None if themself else "told us by phone",
        ),
        people,
        st.sampled_from(list(ReleaseTiming)),
        st.sampled_from(([IndirectItemKind.letter], [IndirectItemKind.message], list(IndirectItemKind))),
        st.booleans(),
        st.one_of(st.none(), st.lists(people, min_size=1, max_size=2, unique=True)),
    ),
    st.builds(lambda p: StopReceivingItems(case_id=CASE, actor=Actor(kind="participant", id=p), person_id=p), people),
    st.builds(lambda p: RequestItems(case_id=CASE, actor=Actor(kind="participant", id=p), person_id=p), people),
    st.builds(
        lambda p, form: SwitchContactForm(case_id=CASE, actor=Actor(kind="participant", id=p), person_id=p, form=form),
        parties,
        st.sampled_from(list(ContactForm)),
    ),
)
step = st.one_of(
    st.tuples(st.just("send"), command),
    st.tuples(st.just("send"), st.builds(lambda p: decision("withdraw", p), people)),
    st.tuples(st.just("send"), st.builds(lambda p: decision("decline", p), people)),
    st.tuples(st.just("send"), st.builds(lambda p: decision("give", p), people)),
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


def _follows(data: EventData, people: tuple[str, ...]) -> bool:
    """A command that must be decided before R: a participation withdrawal or decline by one of ``people``, a
    hold."""
    if isinstance(data, PutCaseOnHold):
        return True
    return (
        isinstance(data, WithdrawConsent | DeclineConsent)
        and data.purpose == PARTICIPATION
        and (data.person_id in people)
    )


def _refused(facts: list[Any], message_id: str) -> bool:
    return any(
        isinstance(f.data, CommandRejected) and f.data.service == "scheduling" and f.data.command_id == message_id
        for f in facts
    )


def _latest(messages: list[EventData], kinds: tuple[type, ...], person: str | None = None) -> EventData | None:
    chosen = [
        m
        for m in messages
        if isinstance(m, kinds)
        and (
            person is None or (getattr(m, "person_id", None) == person and getattr(m, "purpose", None) == PARTICIPATION)
        )
    ]
    return chosen[-1] if chosen else None


def check_releases(world: IndirectWorld) -> int:
    log = world.logs[COMMANDS]
    index_of = {message_id: i for i, (message_id, _) in enumerate(log)}
    facts = world.emitted
    released_items: list[str] = []
    for r, fact in enumerate(facts):
        release = fact.data
        if not isinstance(release, IndirectItemReleased):
            continue
        before = [f.data for f in facts[:r]]
        # p: judged against everything published on rj.commands before the command that released it, in order.
        p = index_of[fact.cause] if fact.cause in index_of else world.published[r]
        sent = log[:p]
        # An unsafe assessment or a parent added, sent before it: decided, and the case found ready again since.
        why = readiness_first(world, r, p)
        assert why is None, f"released: {why}"
        # The contact form: the latest switch sent before it (and not refused) was to indirect contact; the command
        # that released it counts too (a switch back to indirect contact releases what waited only for that).
        upto = log[: p + 1] if fact.cause in index_of else sent
        switches = [d for m, d in upto if isinstance(d, SwitchContactForm) and not _refused(facts[:r], m)]
        assert switches and switches[-1].form is ContactForm.indirect, "released outside indirect contact"
        # The item: not taken back by its sender, nor rejected, by a command sent before it.
        for m, d in sent:
            if isinstance(d, WithdrawIndirectItem | RejectIndirectItem) and d.item_id == release.item_id:
                assert _refused(facts[:r], m), "released after a withdrawal or rejection of the item sent before it"
        # What scheduling had read of rj.consent: consents current, ready, not held.
        heard = [d for _, d in world.logs[CONSENT][: world.consent_read[r]]]
        for person in (release.sender_id, release.recipient_id):
            assert isinstance(_latest(heard, CONSENT_WORDS, person), ConsentGiven), f"{person}'s consent not current"
        assert isinstance(_latest(heard, (CaseReadyForMeeting, CaseReadinessLost, CaseHeld)), CaseReadyForMeeting)
        assert not isinstance(_latest(heard, (CaseHeld, CaseResumed)), CaseHeld), "released while held"
        # After an accepted withdrawal or decline by the sender or recipient, only what came after it goes.
        ended = [
            k
            for k, f in enumerate(facts[:r])
            if isinstance(f.data, ConsentWithdrawn | ConsentDeclined)
            and f.data.purpose == PARTICIPATION
            and f.data.person_id in (release.sender_id, release.recipient_id)
            and f.cause in index_of
            and index_of[f.cause] < p
        ]
        submitted = [
            f
            for f in facts[:r]
            if isinstance(f.data, IndirectItemSubmitted) and f.data.item_id == release.item_id and f.cause in index_of
        ]
        agreements = [
            f
            for f in facts[:r]
            if isinstance(f.data, ReceivingAgreed) and f.data.person_id == release.recipient_id and f.cause in index_of
        ]
        for k in ended:
            ended_at = index_of[facts[k].cause]
            assert submitted and index_of[submitted[-1].cause] > ended_at, "an item from before a withdrawal went"
            assert agreements and index_of[agreements[-1].cause] > ended_at, "an agreement from before it was used"
        ends = {release.sender_id, release.recipient_id}
        assert OFFENDER in ends and len(ends & set(VICTIMS)) == 1, "an item passed to or from a supporter"
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
        assert agreed.from_other_side or release.sender_id in agreed.from_ids, "the agreement does not cover its sender"
        if agreed.timing is ReleaseTiming.on_request:
            assert release.trigger is ReleaseTrigger.request
        if agreed.timing is ReleaseTiming.not_before and release.trigger is not ReleaseTrigger.request:
            assert agreed.not_before is not None and release.released_at >= agreed.not_before
        # Nothing while closed, pending, held or after a withdrawal, in the case's command order.
        assert not any(isinstance(f, CaseClosed) for f in before), "released on a closed case"
        agreed_after = [
            index_of[f.cause]
            for f in facts[:r]
            if isinstance(f.data, ReceivingAgreed) and f.data.person_id == release.recipient_id and f.cause in index_of
        ]
        for i, (_, data) in enumerate(log[:p]):
            if isinstance(data, StopReceivingItems) and data.person_id == release.recipient_id:
                assert any(j > i for j in agreed_after), "released after a stop-receiving sent before it"
        followed = [
            (i, m)
            for i, (m, data) in enumerate(log)
            if _follows(data, (*PARTIES, release.sender_id, release.recipient_id))
        ]
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
            ]
            assert rejected or accepted, "released while a withdrawal or hold sent before it awaited its verdict"
            for k in accepted:
                if isinstance(facts[k].data, CaseHeld):
                    assert any(isinstance(f.data, CaseResumed) for f in facts[k:r]), "released while on hold"
                elif isinstance(facts[k].data, CaseWithdrawn):
                    raise AssertionError("released after a withdrawal the consent service accepted")
    return len(released_items)


def run(steps: list[tuple[Any, ...]], tail: list[Any]) -> IndirectWorld:
    base = ready_world(extra=(CaseParticipant(person_id=SECOND_VICTIM, role=Role.victim, required=False),))
    world = IndirectWorld(**{k: v for k, v in vars(base).items()})
    world.position = [0] * len(world.emitted)
    world.published = [len(world.logs[COMMANDS])] * len(world.emitted)
    world.consent_read = [world.read.get(("scheduling", CONSENT), 0)] * len(world.emitted)
    for kind, arg in steps:
        if kind == "send":
            world.publish(COMMANDS, arg)
        elif kind == "read":
            world.deliver(*arg)
        else:
            world.sweep(arg)
    world.drain(tail)
    world.sweep(3.0)
    world.drain()  # the sweeper's last command is read too
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
            from_other_side=True,
            timing=timing,
            not_before=not_before,
            reason="asked us by phone",
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
@example(  # an unsafe re-assessment sent before the victim's chosen time comes, read by scheduling before consent's
    # word that the case is not ready any more: the sweeper's command must not release
    victim_timing=ReleaseTiming.not_before,
    offender_timing=ReleaseTiming.on_approval,
    opening=[],
    steps=[
        ("send", ApproveIndirectItem(case_id=CASE, actor=STAFF, item_id="L1")),
        ("send", UNSAFE),
        *[_READ_COMMANDS] * 7,
        ("sweep", 3.0),
    ],
    tail=[],
)
@example(  # a parent or guardian added (required, not yet consenting), then an approval read before consent's word
    victim_timing=ReleaseTiming.on_approval,
    offender_timing=ReleaseTiming.on_approval,
    opening=[],
    steps=[
        ("send", adding(SECOND_GUARDIAN, Role.parent_guardian)),
        ("send", ApproveIndirectItem(case_id=CASE, actor=STAFF, item_id="L1")),
        *[_READ_COMMANDS] * 7,
    ],
    tail=[],
)
@example(  # back to a conference, an unsafe re-assessment, then a booking read before consent's word
    victim_timing=ReleaseTiming.on_request,
    offender_timing=ReleaseTiming.on_request,
    opening=[],
    steps=[
        (
            "send",
            SwitchContactForm(
                case_id=CASE, actor=Actor(kind="participant", id=VICTIM), person_id=VICTIM, form=ContactForm.conference
            ),
        ),
        ("send", UNSAFE),
        ("send", booking("M1", 9.0)),
        *[_READ_COMMANDS] * 9,
    ],
    tail=[],
)
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
@example(  # a stop-receiving sent before the chosen time came, not yet read when the sweeper runs (consumer lag)
    victim_timing=ReleaseTiming.not_before,
    offender_timing=ReleaseTiming.on_approval,
    opening=[],
    steps=[
        ("send", ApproveIndirectItem(case_id=CASE, actor=STAFF, item_id="L1")),
        *[_READ_COMMANDS] * 7,
        ("send", StopReceivingItems(case_id=CASE, actor=Actor(kind="participant", id=VICTIM), person_id=VICTIM)),
        ("sweep", 3.0),
    ],
    tail=[],
)
@example(  # a hold sent before the chosen time came, read by no one when the sweeper runs
    victim_timing=ReleaseTiming.not_before,
    offender_timing=ReleaseTiming.on_approval,
    opening=[],
    steps=[
        ("send", ApproveIndirectItem(case_id=CASE, actor=STAFF, item_id="L1")),
        *[_READ_COMMANDS] * 7,
        ("send", PutCaseOnHold(case_id=CASE, actor=STAFF, concern="a threat", raised_by="the police")),
        ("sweep", 3.0),
    ],
    tail=[],
)
@example(  # a withdrawal by a recipient who is not required, read by scheduling, not yet decided by consent
    victim_timing=ReleaseTiming.on_approval,
    offender_timing=ReleaseTiming.on_approval,
    opening=[],
    steps=[
        (
            "send",
            AgreeToReceiveItems(
                case_id=CASE,
                actor=Actor(kind="participant", id=SECOND_VICTIM),
                person_id=SECOND_VICTIM,
                kinds=list(IndirectItemKind),
                from_other_side=True,
                timing=ReleaseTiming.on_request,
            ),
        ),
        (
            "send",
            SubmitIndirectItem(
                case_id=CASE,
                actor=STAFF,
                item_id="L3",
                sender_id=OFFENDER,
                recipient_id=SECOND_VICTIM,
                kind=IndirectItemKind.letter,
                content="sorry",
            ),
        ),
        ("send", ApproveIndirectItem(case_id=CASE, actor=STAFF, item_id="L3")),
        ("send", decision("withdraw", SECOND_VICTIM)),
        (
            "send",
            RequestItems(case_id=CASE, actor=Actor(kind="participant", id=SECOND_VICTIM), person_id=SECOND_VICTIM),
        ),
        *[_READ_COMMANDS] * 12,
    ],
    tail=[],
)
@example(  # a fact (consent's rejection of a withdrawal) lifts the last obstacle while a stop-receiving sent after the
    # approval is still unread on rj.commands: nothing may go until a command after the stop is read
    victim_timing=ReleaseTiming.on_approval,
    offender_timing=ReleaseTiming.on_approval,
    opening=[
        (
            "send",
            AgreeToReceiveItems(
                case_id=CASE,
                actor=Actor(kind="participant", id=SECOND_VICTIM),
                person_id=SECOND_VICTIM,
                kinds=list(IndirectItemKind),
                from_ids=[OFFENDER],
                timing=ReleaseTiming.on_approval,
            ),
        ),
        (
            "send",
            SubmitIndirectItem(
                case_id=CASE,
                actor=STAFF,
                item_id="L3",
                sender_id=OFFENDER,
                recipient_id=SECOND_VICTIM,
                kind=IndirectItemKind.letter,
                content="sorry",
            ),
        ),
    ],
    steps=[
        ("send", decision("withdraw", SECOND_VICTIM).model_copy(update={"actor": Actor(kind="participant", id="O")})),
        ("send", ApproveIndirectItem(case_id=CASE, actor=STAFF, item_id="L3")),
        *[_READ_COMMANDS] * 12,
        (
            "send",
            StopReceivingItems(
                case_id=CASE, actor=Actor(kind="participant", id=SECOND_VICTIM), person_id=SECOND_VICTIM
            ),
        ),
        *[("read", ("consent", COMMANDS))] * 12,
        *[("read", ("scheduling", CONSENT))] * 20,
        ("sweep", 0.0),
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
    check_readiness_first(world)  # and meetings: nothing booked, held or agreed behind either


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
                from_other_side=True,
                timing=ReleaseTiming.not_before,
                not_before=LATER,
                reason="asked us by phone",
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
    assert isinstance(world.logs[COMMANDS][-1][1], ReleaseDueItems), "released by reading the sweeper's command"
