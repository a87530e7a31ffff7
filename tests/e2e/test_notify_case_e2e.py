"""Notify in a running system (referral, consent, scheduling, notify; a real SMTP server and the GOV.UK Notify
stand-in), one system for the module: a 429 from Notify delays a message and loses nothing; a full case through
booking to an offender's withdrawal tells the victim only that the process stopped, the facilitator at once, and
then nothing but the closure notice; replaying every event of the case twice sends nothing new."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from typing import Any

import pytest

from demo import samples
from demo.reader import TopicReader
from demo.samples import STAFF, case_of, command, community_venue, consent, facilitators, next_week, prepare
from schemas import topics
from schemas.common import Channel, Contact
from schemas.scheduling import BookMeeting, MeetingKind
from services.notify.channels.reference import References
from services.runtime.kafka import publish_raw
from tests.conftest import STATE
from tests.e2e.conftest import facilitators_known, facts, schedulable
from tests.harness import System
from tests.support.notify_standin import NotifyStandIn
from tests.support.smtp import ALWAYS_OPEN, Inbox, smtp_server

pytestmark = pytest.mark.integration

FACILITATOR, CO_FACILITATOR, VENUE = "F-NC1", "F-NC2", "V-NC"
OFFENDER_EMAIL = "o-quxmarker@example.net"
OFFENDER_PHONE = "+447700900456"


def reference(message: EmailMessage) -> str:
    """The email's outside reference (its Message-ID's local part: an HMAC of its notification id)."""
    return str(message["Message-ID"]).strip("<>").split("@")[0]


def whole(message: EmailMessage) -> str:
    parts = [p.get_content() for p in message.walk() if p.get_content_type() in ("text/plain", "text/html")]
    return "\n".join([str(message["Subject"]), str(message["To"]), *parts])


@pytest.fixture(scope="module")
def inbox() -> Iterator[tuple[Inbox, int]]:
    handler = Inbox()
    with smtp_server(handler) as port:
        yield handler, port


@pytest.fixture(scope="module")
async def standin() -> AsyncIterator[NotifyStandIn]:
    async with NotifyStandIn() as running:
        yield running


@pytest.fixture(scope="module")
async def running(
    broker: Any, pg_server: str, issuer: Any, inbox: tuple[Inbox, int], standin: NotifyStandIn
) -> AsyncIterator[System]:
    _, port = inbox
    govuk = {k: v.get_secret_value() if hasattr(v, "get_secret_value") else v for k, v in standin.settings().items()}
    async with System(broker.bootstrap, pg_server, STATE / "logs" / "notify_case_e2e", issuer=issuer) as system:
        for name in ("referral", "consent", "scheduling"):
            system.start(name)
        system.start(
            "notify", notify_smtp_host="127.0.0.1", notify_smtp_port=port, notify_smtp_tls="none",
            notify_from_address="rj-hub@hub.example", notify_quiet_hours=ALWAYS_OPEN, notify_poll_interval_s=0.2,
            govuk_notify_retry_after_s=0.5, **govuk,
        )  # fmt: skip
        await system.publish([*facilitators(FACILITATOR, CO_FACILITATOR), community_venue(VENUE)])
        await facilitators_known(system, FACILITATOR, CO_FACILITATOR)
        await facts(system, topics.SCHEDULING, VENUE, "rj.venue.registered")
        yield system


async def statuses(system: System, case_id: str) -> list[tuple[str, str]]:
    rows = await system.fetch("SELECT kind, status FROM notify.scheduled_sends WHERE case_id = $1", case_id)
    return [(r["kind"], r["status"]) for r in rows]


async def settled(system: System, case_id: str) -> None:
    """Until nothing of the case is waiting to go now or in flight (reminders due next week may wait)."""

    async def done() -> bool:
        n = await system.fetchval(
            """SELECT count(*) FROM notify.scheduled_sends WHERE case_id = $1
                AND (status = 'sending' OR (status = 'waiting' AND due_at <= now()))""",
            case_id,
        )
        return bool(n == 0)

    await system.wait_for(done, timeout_s=60, what=f"notify to settle case {case_id}")


async def test_a_429_from_govuk_notify_twice_delays_the_sms_and_it_is_sent_exactly_once(
    running: System, standin: NotifyStandIn
) -> None:
    ref = "WM/2026/720001"
    phone = "+447700900123"
    victim = samples.victim(f"V-{ref}").model_copy(
        update={"preferred_channel": Channel.sms, "contact": Contact(phone=phone)}
    )
    standin.fail_next(2, 429, retry_after=0.5)
    await running.publish(
        samples.on_crime_events(samples.crime_recorded(ref, victims=[victim]), samples.outcome_recorded(ref))
    )

    async def information_sent() -> bool:
        return ("victim_information", "sent") in await statuses(running, case_of(ref))

    await running.wait_for(information_sent, timeout_s=60, what="the victim's information sent by SMS")
    await settled(running, case_of(ref))
    posts = [path for method, path in standin.requests if method == "POST" and path.endswith("/sms")]
    assert len(posts) >= 3  # two answered 429, then accepted
    assert len([a for a in standin.accepted if a.recipient == phone]) == 1
    tries = await running.fetchval(
        "SELECT tries FROM notify.scheduled_sends WHERE case_id = $1 AND kind = 'victim_information'", case_of(ref)
    )
    assert tries == 3  # the message waited out each 429, on the same notification (one reference at Notify)


async def test_an_offenders_withdrawal_after_booking_tells_the_victim_only_that_it_stopped_then_only_the_closure(
    running: System, inbox: tuple[Inbox, int], standin: NotifyStandIn
) -> None:
    handler, _ = inbox
    ref = "WM/2026/720002"
    case_id, victim, offender = case_of(ref), f"V-{ref}", f"O-{ref}"
    outcome = samples.outcome_recorded(ref)
    outcome = outcome.model_copy(
        update={"offender": outcome.offender.model_copy(update={"contact": Contact(email=OFFENDER_EMAIL,
                                                                                   phone=OFFENDER_PHONE)})}
    )  # fmt: skip
    await running.publish(samples.on_crime_events(samples.crime_recorded(ref), outcome))
    await facts(running, topics.CONSENT, case_id, "rj.preparation.started")
    await running.publish(prepare(case_id, [victim, offender], [FACILITATOR, CO_FACILITATOR]))
    await facts(running, topics.CONSENT, case_id, "rj.case.ready-for-meeting")
    await schedulable(running, case_id)
    starts = next_week(hour=10)
    await running.publish(
        [command(BookMeeting(case_id=case_id, actor=STAFF, meeting_id="M1", kind=MeetingKind.conference,
                             starts_at=starts, ends_at=starts.replace(minute=30), lead_facilitator_id=FACILITATOR,
                             co_facilitator_id=CO_FACILITATOR, venue_id=VENUE))]
    )  # fmt: skip
    await facts(running, topics.SCHEDULING, case_id, "rj.meeting.booked")

    async def reminder_waiting() -> bool:
        return ("meeting_reminder", "waiting") in await statuses(running, case_id)

    await running.wait_for(reminder_waiting, what="a meeting reminder waiting")
    await settled(running, case_id)
    victim_address = f"v-{ref.lower()}@example.org"
    before = {reference(m) for m in handler.to(victim_address)}
    assert before, "the victim got nothing before the withdrawal"

    await running.publish([consent(case_id, offender, withdraw=True)])
    await facts(running, topics.SCHEDULING, case_id, "rj.case.closed")

    async def told() -> bool:
        kinds = await running.fetch(
            "SELECT kind FROM notify.scheduled_sends WHERE case_id = $1 AND status = 'sent'", case_id
        )
        got = {r["kind"] for r in kinds}
        return {"process_stopped", "facilitator_withdrawal", "closure"} <= got

    await running.wait_for(told, timeout_s=60, what="the stop, the facilitator's notice and the closure sent")
    await settled(running, case_id)

    references = References.from_settings(running.settings)
    kinds = {
        references.of(r["notification_id"]): r["kind"]
        for r in await running.fetch("SELECT notification_id, kind FROM notify.scheduled_sends WHERE case_id = $1",
                                     case_id)
    }  # fmt: skip
    victims = handler.to(victim_address)
    after = [m for m in victims if reference(m) not in before]
    assert sorted(kinds[reference(m)] for m in after) == ["closure", "process_stopped"]
    for message in victims:  # the victim never learns who stopped it, or anything of the offender
        text = whole(message)
        for marker in ("Offender", offender, OFFENDER_EMAIL, OFFENDER_PHONE, "quxmarker"):
            assert marker.lower() not in text.lower(), f"{marker!r} in {message['Subject']!r}"
    facilitator_told = [kinds.get(reference(m)) for m in handler.to(f"{FACILITATOR}@rj-hub.example")]
    assert facilitator_told.count("facilitator_withdrawal") == 1
    assert ("meeting_reminder", "cancelled") in await statuses(running, case_id)
    assert ("meeting_reminder", "sent") not in await statuses(running, case_id)
    assert len(victims) == len({reference(m) for m in victims})  # each once


async def test_replaying_every_event_of_the_case_twice_sends_nothing_new(
    running: System, inbox: tuple[Inbox, int], standin: NotifyStandIn
) -> None:
    handler, _ = inbox
    case_id = case_of("WM/2026/720002")  # the case of the test above, closed after the withdrawal
    await settled(running, case_id)
    sent_before, accepted_before = len(handler.received), len(standin.accepted)
    rows_before = await running.fetchval("SELECT count(*) FROM notify.scheduled_sends")
    followed = (topics.REFERRAL, topics.CONSENT, topics.SCHEDULING, topics.COMMANDS)
    reader = TopicReader(running.settings, followed)
    await reader.start()
    records: list[tuple[str, bytes | None, bytes, int | None]] = []
    try:
        while batch := await reader.read_records(1.0):
            records += [
                (r.topic.removeprefix(running.settings.topic_prefix), r.key, r.value, None)
                for r in batch
                if r.key == case_id.encode()
            ]
    finally:
        await reader.stop()
    assert len(records) > 10

    async def positions() -> int:
        return int(await running.fetchval("SELECT coalesce(sum(next_offset), 0) FROM notify.consumer_positions"))

    start = await positions()
    await publish_raw(running.settings, records * 2)

    async def replay_read() -> bool:
        return await positions() >= start + 2 * len(records)

    await running.wait_for(replay_read, timeout_s=60, what="notify to read the replay")
    await settled(running, case_id)
    await asyncio.sleep(1.0)  # anything the replay sent would be at the server by now
    assert len(handler.received) == sent_before
    assert len(standin.accepted) == accepted_before
    assert await running.fetchval("SELECT count(*) FROM notify.scheduled_sends") == rows_before
