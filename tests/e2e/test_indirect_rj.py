"""Indirect RJ (DOMAIN rule 9) as an outside client meets it, on the real broker and PostgreSQL: an offender's
letter, approved by the facilitator, is released to the victim only once the victim has agreed in advance to
receive it, and not at all without that; a stop-receiving in between blocks the next one; a recipient's chosen
time is kept by the scheduling service's sweeper."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from demo.samples import STAFF, command, facilitators, prepare
from schemas import topics
from schemas.common import Actor
from schemas.consent import PutCaseOnHold
from schemas.indirect import (
    AgreeToReceiveItems,
    ApproveIndirectItem,
    ContactForm,
    IndirectItemKind,
    RecordItemDelivered,
    ReleaseTiming,
    StopReceivingItems,
    SubmitIndirectItem,
    SwitchContactForm,
)
from tests.e2e.conftest import facilitators_known, facts, referred_case, rejection, schedulable
from tests.harness import System

pytestmark = pytest.mark.integration

RELEASED = "rj.indirect.item-released"


def letter(case_id: str, item_id: str, sender: str, recipient: str, kind: IndirectItemKind) -> tuple[str, str, bytes]:
    return command(
        SubmitIndirectItem(
            case_id=case_id,
            actor=STAFF,  # the facilitator passes on what the participant wrote
            item_id=item_id,
            sender_id=sender,
            recipient_id=recipient,
            kind=kind,
            content="I am sorry for the harm I caused.",
        )
    )


def approve(case_id: str, item_id: str) -> tuple[str, str, bytes]:
    return command(ApproveIndirectItem(case_id=case_id, actor=STAFF, item_id=item_id))


def agree(
    case_id: str, person: str, timing: ReleaseTiming, not_before: datetime | None = None
) -> tuple[str, str, bytes]:
    me = Actor(kind="participant", id=person)
    kinds = list(IndirectItemKind)
    return command(
        AgreeToReceiveItems(
            case_id=case_id,
            actor=me,
            person_id=person,
            kinds=kinds,
            from_other_side=True,
            timing=timing,
            not_before=not_before,
        )
    )


async def released(system: System, case_id: str, n: int = 1, **kw: Any) -> list[dict[str, Any]]:
    return await facts(system, topics.SCHEDULING, case_id, RELEASED, n, **kw)


async def test_rule_9_an_indirect_letter_reaches_the_victim_only_after_their_advance_agreement_and_approval(
    system: System,
) -> None:
    for name in ("referral", "consent", "scheduling"):
        system.start(name)
    await system.publish(facilitators("F-IND"))
    await facilitators_known(system, "F-IND")
    case_id, victim, offender = await referred_case(system, "WM/2026/916001")
    await system.publish(prepare(case_id, [victim, offender], ["F-IND"]))
    await facts(system, topics.CONSENT, case_id, "rj.case.ready-for-meeting")
    await schedulable(system, case_id)

    # The offender switches to indirect contact, writes a letter, and the facilitator approves it: without the
    # victim's advance agreement it goes nowhere.
    switch = SwitchContactForm(
        case_id=case_id, actor=Actor(kind="participant", id=offender), person_id=offender, form=ContactForm.indirect
    )
    await system.publish([command(switch), letter(case_id, "L1", offender, victim, IndirectItemKind.letter)])
    await facts(system, topics.SCHEDULING, case_id, "rj.indirect.item-submitted")
    await system.publish([approve(case_id, "L1")])
    await facts(system, topics.SCHEDULING, case_id, "rj.indirect.item-approved")
    everything = await system.read_until(topics.SCHEDULING, lambda ms: True, settle_s=1.5)
    assert not [m for m in everything if m["type"] == RELEASED and m["subject"] == case_id], (
        "released before the victim agreed to receive it"
    )

    # The victim agrees in advance, to receive items as soon as approved: the letter is released.
    await system.publish([agree(case_id, victim, ReleaseTiming.on_approval)])
    (first,) = await released(system, case_id)
    assert first["data"]["item_id"] == "L1" and first["data"]["recipient_id"] == victim
    assert first["data"]["trigger"] == "decision"
    assert "sorry" not in str(first["data"]["content"]), "the letter's text travels sealed"
    delivered = RecordItemDelivered(case_id=case_id, actor=STAFF, item_id="L1", delivered_at=datetime.now(UTC))
    await system.publish([command(delivered)])
    await facts(system, topics.SCHEDULING, case_id, "rj.indirect.item-delivered")

    # The victim stops receiving; a second letter, approved after it, is held back; a delivery of it cannot be
    # recorded, as it was never released.
    stop = StopReceivingItems(case_id=case_id, actor=Actor(kind="participant", id=victim), person_id=victim)
    await system.publish([command(stop), letter(case_id, "L2", offender, victim, IndirectItemKind.letter)])
    await facts(system, topics.SCHEDULING, case_id, "rj.indirect.receiving-stopped")
    await system.publish([approve(case_id, "L2")])
    await facts(system, topics.SCHEDULING, case_id, "rj.indirect.item-approved", 2)
    not_delivered = RecordItemDelivered(case_id=case_id, actor=STAFF, item_id="L2", delivered_at=datetime.now(UTC))
    await system.publish([command(not_delivered)])
    (refused,) = await rejection(system, case_id, topics.SCHEDULING)
    assert "not released" in refused
    assert len(await released(system, case_id, 1, settle_s=1.0)) == 1, "released after the victim stopped receiving"

    # The other way, at a time the recipient chose: the victim's reply reaches the offender only when it comes,
    # released by the sweeper.
    # Far enough ahead that the approval is decided before it, even on a loaded machine (at 3 s, a run with four
    # test workers saw the approval decided after the chosen time, and the reply released on the decision).
    when = datetime.now(UTC) + timedelta(seconds=8)
    await system.publish(
        [
            agree(case_id, offender, ReleaseTiming.not_before, when),
            letter(case_id, "R1", victim, offender, IndirectItemKind.message),
            approve(case_id, "R1"),
        ]
    )
    await facts(system, topics.SCHEDULING, case_id, "rj.indirect.item-approved", 3)
    reply = [r for r in await released(system, case_id, 2, timeout_s=30) if r["data"]["item_id"] == "R1"]
    assert len(reply) == 1 and reply[0]["data"]["trigger"] == "time"
    assert datetime.fromisoformat(reply[0]["data"]["released_at"]) >= when
    assert [r["data"]["item_id"] for r in await released(system, case_id, 2)] == ["L1", "R1"]
    # The sweeper released nothing itself: it asked, on rj.commands in the case's order, and that was read.
    asked = await facts(system, topics.COMMANDS, case_id, "rj.indirect.release-due")
    assert asked and asked[0]["source"] == "urn:rj:service:scheduling"
    assert await system.fetchval("SELECT count(*) FROM scheduling.release_watch WHERE case_id = $1", case_id) == 0


async def test_the_release_sweep_reads_only_items_due_and_passes_over_a_held_case(system: System) -> None:
    """The sweep reads the release watch, not every case: an approved item waiting for its recipient's time is
    watched; a hold takes it off the watch, so a held case is never selected, asked about or released."""
    for name in ("referral", "consent", "scheduling"):
        system.start(name)
    await system.publish(facilitators("F-IND2"))
    await facilitators_known(system, "F-IND2")
    case_id, victim, offender = await referred_case(system, "WM/2026/916002")
    await system.publish(prepare(case_id, [victim, offender], ["F-IND2"]))
    await schedulable(system, case_id)
    when = datetime.now(UTC) + timedelta(seconds=4)
    switch = SwitchContactForm(case_id=case_id, actor=STAFF, person_id=offender, form=ContactForm.indirect, reason="x")
    await system.publish(
        [
            command(switch),
            agree(case_id, victim, ReleaseTiming.not_before, when),
            letter(case_id, "L1", offender, victim, IndirectItemKind.letter),
            approve(case_id, "L1"),
        ]
    )
    await facts(system, topics.SCHEDULING, case_id, "rj.indirect.item-approved")
    watched = await system.fetch("SELECT item_id, due_at FROM scheduling.release_watch WHERE case_id = $1", case_id)
    assert [(r["item_id"], r["due_at"]) for r in watched] == [("L1", when)]
    hold = PutCaseOnHold(case_id=case_id, actor=STAFF, concern="a threat", raised_by="the police")
    await system.publish([command(hold)])
    await facts(system, topics.CONSENT, case_id, "rj.case.held")

    async def unwatched() -> bool:
        sql = "SELECT count(*) FROM scheduling.release_watch WHERE case_id = $1"
        return await system.fetchval(sql, case_id) == 0

    await system.wait_for(unwatched, what="the held case's item off the release watch")
    later = await system.read_until(
        topics.COMMANDS, lambda ms: True, settle_s=max(0.0, (when - datetime.now(UTC)).total_seconds()) + 3
    )
    assert not [m for m in later if m["type"] == "rj.indirect.release-due" and m["subject"] == case_id]
    everything = await system.read_until(topics.SCHEDULING, lambda ms: True, settle_s=0.5)
    assert not [m for m in everything if m["type"] == RELEASED and m["subject"] == case_id]
