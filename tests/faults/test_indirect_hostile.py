"""Indirect RJ (DOMAIN rule 9) driven only as an outside client can: commands on ``rj.commands``, facts read back,
on the real broker and PostgreSQL, with hostile input among them. A forged release command, a letter far too
long, an item from someone who is not a party, bad bytes and a tombstone on the case's own partition, a repeated
approval, a stop-receiving racing the sweeper's timed release, and a withdrawal racing an approval: the services
keep going, answer every command, dead-letter what they cannot read, and nothing reaches the victim but the one
letter she agreed to receive while her case was open."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from demo.samples import STAFF, command, consent, facilitators, prepare
from schemas import topics
from schemas.common import Actor
from schemas.indirect import (
    AgreeToReceiveItems,
    ApproveIndirectItem,
    ContactForm,
    IndirectItemKind,
    ReleaseDueItems,
    ReleaseTiming,
    StopReceivingItems,
    SubmitIndirectItem,
    SwitchContactForm,
)
from tests.e2e.conftest import facilitators_known, facts, referred_case, schedulable
from tests.harness import System

pytestmark = pytest.mark.integration

RELEASED = "rj.indirect.item-released"


def submit(case_id: str, item_id: str, sender: str, recipient: str, text: str) -> tuple[str, str, bytes]:
    """As a client sends it; built unchecked, so that one our contract refuses (too long) can be sent too."""
    return command(
        SubmitIndirectItem.model_construct(
            case_id=case_id,
            actor=STAFF,
            item_id=item_id,
            sender_id=sender,
            recipient_id=recipient,
            kind=IndirectItemKind.letter,
            content=text,
        )
    )


def approve(case_id: str, item_id: str) -> tuple[str, str, bytes]:
    return command(ApproveIndirectItem(case_id=case_id, actor=STAFF, item_id=item_id))


def agree(
    case_id: str, victim: str, timing: ReleaseTiming, not_before: datetime | None = None
) -> tuple[str, str, bytes]:
    return command(
        AgreeToReceiveItems(
            case_id=case_id,
            actor=Actor(kind="participant", id=victim),
            person_id=victim,
            kinds=[IndirectItemKind.letter],
            from_other_side=True,
            timing=timing,
            not_before=not_before,
        )
    )


async def everything_on(system: System, topic: str, case_id: str, settle_s: float = 1.5) -> list[dict[str, Any]]:
    messages = await system.read_until(topic, lambda ms: True, settle_s=settle_s)
    return [m for m in messages if m.get("subject") == case_id]


async def test_rule_9_hostile_commands_and_races_never_release_an_item_the_victim_did_not_agree_to(
    system: System,
) -> None:
    for name in ("referral", "consent"):
        system.start(name)
    system.start("scheduling", deadline_sweep_interval_s=0.3)
    await system.publish(facilitators("F-HOS"))
    await facilitators_known(system, "F-HOS")
    case_id, victim, offender = await referred_case(system, "WM/2026/966001")
    await system.publish(prepare(case_id, [victim, offender], ["F-HOS"]))
    await facts(system, topics.CONSENT, case_id, "rj.case.ready-for-meeting")
    await schedulable(system, case_id)
    as_offender = Actor(kind="participant", id=offender)
    switch = SwitchContactForm(case_id=case_id, actor=as_offender, person_id=offender, form=ContactForm.indirect)
    await system.publish([command(switch)])
    await facts(system, topics.SCHEDULING, case_id, "rj.contact-form.switched")

    # Hostile input on the case's own partition, between good commands.
    forged = command(ReleaseDueItems(case_id=case_id, actor=Actor(kind="participant", id=victim)))
    await system.publish(
        [
            forged,  # only the scheduling service may send itself this
            submit(case_id, "HUGE", offender, victim, "x" * 20_001),  # over the content limit
            submit(case_id, "STRANGER", "P-NOBODY", victim, "Not a party to this case"),
            (topics.COMMANDS, case_id, b"\xff\xfe not an event"),
            (topics.COMMANDS, case_id, None),  # type: ignore[list-item]  # a tombstone
            submit(case_id, "L1", offender, victim, "I am sorry."),
            approve(case_id, "L1"),
            approve(case_id, "L1"),  # again, as a second click would send it
        ]
    )
    await facts(system, topics.SCHEDULING, case_id, "rj.indirect.item-approved")
    rejected = await facts(system, topics.SCHEDULING, case_id, "rj.command.rejected", 4)
    assert len(rejected) >= 4, "the forged release, the huge letter, the stranger's item and the second approval"

    async def dead_lettered() -> bool:
        """Unreadable records are dead-lettered once, by the topic's steward, with a reason."""
        rows = [
            r
            for service in ("referral", "consent", "scheduling")
            for r in await system.fetch(
                f"SELECT reason FROM {service}.dead_letters WHERE source_topic IN ($1, $2)",
                topics.COMMANDS,
                system.settings.topic(topics.COMMANDS),
            )
        ]
        return len(rows) >= 2 and all(r["reason"] for r in rows)

    await system.wait_for(dead_lettered, what="the bad bytes and the tombstone to be dead-lettered")

    # Race 1: the victim agrees to receive letters from a moment just ahead, then stops receiving; the sweeper's
    # timed release comes after her stop in the case's order, and releases nothing.
    soon = datetime.now(UTC) + timedelta(seconds=1)
    stop = StopReceivingItems(case_id=case_id, actor=Actor(kind="participant", id=victim), person_id=victim)
    await system.publish([agree(case_id, victim, ReleaseTiming.not_before, soon), command(stop)])
    await facts(system, topics.SCHEDULING, case_id, "rj.indirect.receiving-stopped")
    await asyncio.sleep(4.0)  # several sweeps past her chosen time, and a hop of up to the tests' 500 ms fetch wait
    assert not [m for m in await everything_on(system, topics.SCHEDULING, case_id) if m["type"] == RELEASED]

    # She agrees again, to receive on approval: the approved letter is released, once.
    await system.publish([agree(case_id, victim, ReleaseTiming.on_approval)])
    (first,) = await facts(system, topics.SCHEDULING, case_id, RELEASED)
    assert first["data"]["item_id"] == "L1"

    # Race 2: a second letter, then her withdrawal and its approval together: the withdrawal, first in the
    # case's order, holds the case pending, consent's verdict closes it, and the letter never goes.
    await system.publish([submit(case_id, "L2", offender, victim, "One more thing.")])
    await facts(system, topics.SCHEDULING, case_id, "rj.indirect.item-submitted", 2)
    await system.publish([consent(case_id, victim, withdraw=True), approve(case_id, "L2")])
    await facts(system, topics.SCHEDULING, case_id, "rj.case.closed")
    await asyncio.sleep(2.0)  # a release decided late would be on the topic by now (sweeps every 0.5 s, one hop)
    released = [m for m in await everything_on(system, topics.SCHEDULING, case_id) if m["type"] == RELEASED]
    assert [m["data"]["item_id"] for m in released] == ["L1"]
    # Every good command still had its effect: the services kept consuming through the poison.
    approved = [m for m in await everything_on(system, topics.SCHEDULING, case_id) if m["type"].endswith("approved")]
    assert [m["data"]["item_id"] for m in approved] == ["L1"], "L2's approval came after the withdrawal"
