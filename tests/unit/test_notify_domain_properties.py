"""Properties of notify's decisions under the delivery the system really has: topics interleaved in any order
(each in its own order), events repeated, time passing between them while messages wait and go.

After a withdrawal or hold *command* is read, nothing but the closure notice (and the stop's own notices) is ever
sent to a participant on the case, whatever came before or after it from the other topics (DOMAIN rule 2); and the
ids decided are the same on every replay, so a replay schedules nothing new.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.envelope import EventData
from schemas.notify import NotificationKind, RecipientKind
from services.notify import domain
from services.notify.domain import Intent, NotifyCase
from tests.unit import notify_events as ev

Kind = NotificationKind


@dataclass
class Sends:
    """What notify's table of scheduled sends and the sender would do with the decisions: cancels first, then
    inserts (an id already there is not inserted again), and at each tick everything due goes."""

    waiting: dict[str, Intent] = field(default_factory=dict)
    known: set[str] = field(default_factory=set)
    sent: list[tuple[int, Intent]] = field(default_factory=list)

    def apply(self, decision: domain.Decision) -> int:
        for cancel in decision.cancels:
            for nid, i in list(self.waiting.items()):
                if cancel.matches(recipient_id=i.recipient_id, recipient_kind=i.recipient_kind, kind=i.kind,
                                  about=i.about):  # fmt: skip
                    del self.waiting[nid]
        new = 0
        for intent in decision.intents:
            if intent.notification_id in self.known:
                continue
            self.known.add(intent.notification_id)
            new += 1
            if intent.channel is not None:
                self.waiting[intent.notification_id] = intent
        return new

    def tick(self, step: int, now: datetime) -> None:
        for nid, intent in sorted(self.waiting.items()):
            if intent.due_at <= now:
                self.sent.append((step, intent))
                del self.waiting[nid]


def topics_of(stop: str, rejected: bool, closes: bool = True) -> dict[str, list[tuple[str, EventData]]]:
    """One case's events per topic, each topic in its own order; the stop command's verdict on rj.consent."""
    command = ev.withdraw() if stop == "withdraw" else ev.hold()
    if rejected:
        verdict: list[tuple[str, EventData]] = [("verdict", ev.rejected("stop", command.event_type))]
    elif stop == "withdraw":
        verdict = [("cw", ev.consent_withdrawn("stop")), ("case-withdrawn", ev.case_withdrawn())]
    else:
        verdict = [("held", ev.held("stop"))]
    return {
        "referral": [("vi-due", ev.victim_information_due())],
        "consent": [("assigned", ev.assigned()), *verdict, ("survey", ev.survey(ev.VICTIM))],
        "scheduling": [
            ("booked", ev.booked(starts_at=ev.T0 + timedelta(days=12))),
            ("due-soon", ev.due_soon()),
            ("overdue", ev.overdue()),
            ("booked-2", ev.booked("M2", starts_at=ev.T0 + timedelta(days=20))),
            *([("closed", ev.closed())] if closes else []),
        ],
        "commands": [("stop", command)],
    }


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[str, bool, list[tuple[str, EventData]], list[float]]:
    stop = draw(st.sampled_from(["withdraw", "hold"]))
    rejected = draw(st.booleans())
    closes = draw(st.booleans())
    streams = {name: list(events) for name, events in topics_of(stop, rejected, closes).items()}
    # Repeats: a few events delivered again, right after themselves or later in their topic.
    for name in streams:
        for _ in range(draw(st.integers(0, 2))):
            stream = streams[name]
            i = draw(st.integers(0, len(stream) - 1))
            j = draw(st.integers(i + 1, len(stream)))
            stream.insert(j, stream[i])
    # The case is opened and accepted before anything else can happen to it (every other event follows from them).
    order: list[tuple[str, EventData]] = [("opened", ev.opened()), ("accepted", ev.accepted())]
    while any(streams.values()):
        name = draw(st.sampled_from(sorted(n for n, s in streams.items() if s)))
        order.append(streams[name].pop(0))
    delays = draw(st.lists(st.floats(0, 48), min_size=len(order), max_size=len(order)))  # hours between events
    return stop, rejected, order, delays


def run(order: list[tuple[str, EventData]], delays: list[float]) -> tuple[Sends, int | None, NotifyCase | None]:
    sends, case, now, stop_step = Sends(), None, ev.T0, None
    for step, ((event_id, event), delay) in enumerate(zip(order, delays, strict=True)):
        now += timedelta(hours=delay)
        sends.tick(step, now)
        decision = domain.decide(case, event, case_id=ev.CASE, event_id=event_id, now=now)
        case = decision.case
        sends.apply(decision)
        if event_id == "stop" and stop_step is None:
            stop_step = step
    sends.tick(len(order), now + timedelta(days=30))
    return sends, stop_step, case


@settings(max_examples=150, deadline=None)
@given(deliveries())
def test_after_a_stop_command_nothing_but_the_closure_notice_reaches_a_participant(
    delivery: tuple[str, bool, list[tuple[str, EventData]], list[float]],
) -> None:
    stop, rejected, order, delays = delivery
    sends, stop_step, _ = run(order, delays)
    assert stop_step is not None
    if rejected:
        return  # consent refused the stop: the case goes on (the next test holds what a refused stop keeps)
    after = [i for step, i in sends.sent if step > stop_step and i.recipient_kind is RecipientKind.participant]
    assert {i.kind for i in after} <= domain.AFTER_A_STOP, [i.kind for i in after]
    if stop == "hold":
        assert {i.kind for i in after} <= {Kind.closure}
    stopped_notices = [i for _, i in sends.sent if i.kind is Kind.process_stopped]
    assert all(i.recipient_id != ev.OFFENDER and i.facts == {} for i in stopped_notices)  # never the withdrawer
    assert not any(i.kind is Kind.survey_invitation for step, i in sends.sent if step > stop_step)


@settings(max_examples=100, deadline=None)
@given(deliveries())
def test_every_message_goes_at_most_once_and_a_replay_of_everything_decides_nothing_new(
    delivery: tuple[str, bool, list[tuple[str, EventData]], list[float]],
) -> None:
    _, _, order, delays = delivery
    sends, _, case = run(order, delays)
    ids = [i.notification_id for _, i in sends.sent]
    assert len(ids) == len(set(ids))
    again, _, _ = run(order, delays)
    assert [i.notification_id for _, i in again.sent] == ids  # the same ids, decided again
    # Every event taken in twice in a row (a redelivery the inbox did not catch): the second decides nothing new.
    sends, case, now = Sends(), None, ev.T0
    for (event_id, event), delay in zip(order, delays, strict=True):
        now += timedelta(hours=delay)
        for copy in range(2):
            decision = domain.decide(case, event, case_id=ev.CASE, event_id=event_id, now=now)
            case = decision.case
            new = sends.apply(decision)
            assert copy == 0 or new == 0, event_id


@settings(max_examples=100, deadline=None)
@given(deliveries())
def test_the_closure_notice_reaches_every_participant_not_erased_once(
    delivery: tuple[str, bool, list[tuple[str, EventData]], list[float]],
) -> None:
    _, _, order, delays = delivery
    sends, _, _ = run(order, delays)
    closures = sorted(i.recipient_id for _, i in sends.sent if i.kind is Kind.closure)
    if not any(event_id == "closed" for event_id, _ in order):
        assert closures == []
        return
    assert closures == sorted([ev.OFFENDER, ev.VICTIM])
