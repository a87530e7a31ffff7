"""The review's notify findings, each against the real PostgreSQL and the real channels (an SMTP server in process,
aiosmtpd; the GOV.UK Notify stand-in): a stop reaches messages already claimed, sending or in doubt; ...

Each test failed before its fix (the finding's number is in its name)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import asyncpg
import pytest
from pydantic import SecretStr

from schemas import topics
from schemas.common import Actor, Channel
from schemas.scheduling import FacilitatorRegistered
from services.notify import domain, store
from services.notify.channels import CannotLookUp, LookupFailed, Outbound, SendResult, senders_from_settings
from services.notify.compose import Composer
from services.notify.domain import NotifyCase
from services.notify.sender import Sender
from services.runtime.participant_links import new_link_key
from services.runtime.settings import Settings
from tests.integration.test_notify_intake import Feed, facts_out, pool, processor  # noqa: F401
from tests.support.notify_standin import NotifyStandIn
from tests.support.smtp import Inbox, smtp_server
from tests.unit import notify_events as ev

pytestmark = pytest.mark.integration

STAFF = Actor(kind="staff", id="F-ADMIN")
VICTIM_EMAIL = "vera@example.org"
FACILITATOR_EMAIL = "ann.facil@hub.example"
COORDINATORS = "rj-coordinators@hub.example"


class Relay(Inbox):
    """An SMTP server's handler: records what it takes; ``replies`` answers a mailbox's next messages with these
    instead (e.g. a 451) before taking any again; ``refused`` mailboxes get a 550."""

    def __init__(self) -> None:
        super().__init__()
        self.replies: dict[str, list[str]] = {}  # a mailbox's next answers instead of taking its messages
        self.refused: set[str] = set()  # mailboxes that do not exist: a 550, for good

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        for to in envelope.rcpt_tos:
            if self.replies.get(to):
                return self.replies[to].pop(0)
        if self.refused & set(envelope.rcpt_tos):
            return "550 5.1.1 no such mailbox"
        self.take(envelope)
        return "250 OK queued"


@pytest.fixture
def smtp() -> Iterator[tuple[Relay, int]]:
    relay = Relay()
    with smtp_server(relay) as port:
        yield relay, port


@pytest.fixture
async def notify() -> AsyncIterator[NotifyStandIn]:
    async with NotifyStandIn() as standin:
        yield standin


def settings(port: int = 1, **overrides: Any) -> Settings:
    fields: dict[str, Any] = {
        "notify_smtp_host": "127.0.0.1", "notify_smtp_port": port, "notify_smtp_tls": "none",
        "notify_from_address": "rj-hub@hub.example", "participant_link_key": SecretStr(new_link_key()),
        "public_base_url": "https://rj.hub.example",
    }  # fmt: skip
    return Settings(**(fields | overrides))


@dataclass
class Hooked:
    """A real channel with a hook run just before it is called for the person at ``to``: the moment a stop can
    come while a message is on its way."""

    inner: Any
    to: str
    hook: Callable[[], Awaitable[None]]
    ran: bool = False

    async def send(self, message: Outbound) -> SendResult:
        if message.to == self.to and not self.ran:
            self.ran = True
            await self.hook()
        result: SendResult = await self.inner.send(message)
        return result

    async def lookup(self, notification_id: str) -> SendResult | None:
        found: SendResult | None = await self.inner.lookup(notification_id)
        return found


def sender(db: asyncpg.Pool, configured: Settings, now: datetime, **channels: Any) -> Sender:
    senders: dict[Channel, Any] = dict(senders_from_settings(configured, db))
    senders |= {Channel(name): channel for name, channel in channels.items()}
    return Sender(db, senders, Composer(configured, lambda: now), clock=lambda: now,
                  cannot_look_up=(CannotLookUp,), lookup_failed=(LookupFailed,))  # fmt: skip


def registered() -> FacilitatorRegistered:
    return FacilitatorRegistered(
        facilitator_id="F-ANN", specialist=False, working_hours=[], timezone="Europe/London", registered_at=ev.T0,
        registered_by=STAFF, email=FACILITATOR_EMAIL, display_name="Ann Facil",
    )  # fmt: skip


async def a_case(
    db: asyncpg.Pool, feed: Feed, *, assigned: bool = True, victim_safe: list[Channel] | None = None
) -> None:
    """A case accepted at ``ev.T0`` (inside the hours) with the victim's information due now; ``victim_safe``: the
    channels the victim's safe-contact record allows."""
    records = [
        feed.add(topics.SCHEDULING, registered(), "reg-ann"),
        feed.add(topics.REFERRAL, ev.opened(), "opened"),
        feed.add(topics.REFERRAL, ev.accepted(), "accepted"),
    ]
    if victim_safe is not None:
        records.append(feed.add(topics.CONSENT, ev.safe_contact(ev.VICTIM, victim_safe), "safe-contact"))
    if assigned:
        records.append(feed.add(topics.CONSENT, ev.assigned(), "assigned"))
    records.append(feed.add(topics.REFERRAL, ev.victim_information_due(), "vi-due"))
    await processor(db, ev.T0).process(records)


async def sends(db: asyncpg.Pool) -> dict[str, asyncpg.Record]:
    return {r["kind"]: r for r in await store.sends_of(db, ev.CASE)}  # type: ignore[arg-type]


async def send_everything_due(sender: Sender) -> None:
    while await sender.send_due():
        pass


# --- finding 1: a stop reaches messages already claimed, sending, waiting to retry, or in doubt ---------------


async def test_1_a_withdrawal_while_a_message_is_out_and_then_fails_for_now_cancels_its_retry(
    pool: asyncpg.Pool,  # noqa: F811
    smtp: tuple[Relay, int],
) -> None:
    relay, port = smtp
    configured = settings(port)
    feed = Feed()
    await a_case(pool, feed)

    async def withdraws() -> None:  # the victim withdraws while their message is with the SMTP server
        await processor(pool, ev.T0).process([feed.add(topics.COMMANDS, ev.withdraw(ev.VICTIM), "withdraw-1")])
        relay.replies[VICTIM_EMAIL] = ["451 4.3.0 try again later"]

    email_channel = Hooked(senders_from_settings(configured, pool)[Channel.email], VICTIM_EMAIL, withdraws)
    await send_everything_due(sender(pool, configured, ev.T0, email=email_channel))
    assert email_channel.ran

    info = (await sends(pool))["victim_information"]
    assert (info["status"], info["detail"]) == ("cancelled", "withdrawn")
    cancelled = [f["data"] for f in await facts_out(pool) if f["type"] == "rj.notification.cancelled"]
    assert [(c["kind"], c["reason_code"]) for c in cancelled] == [("victim_information", "withdrawn")]

    later = ev.T0 + timedelta(hours=2)  # past any backoff: nothing goes to the victim
    await send_everything_due(sender(pool, configured, later))
    assert relay.to(VICTIM_EMAIL) == []
    assert len(relay.to(FACILITATOR_EMAIL)) == 1  # the assignment, which the stop does not touch


@pytest.mark.parametrize("together", [False, True], ids=["one-by-one", "as-a-group"])
async def test_1_a_withdrawal_processed_while_a_message_is_claimed_cancels_it_before_the_channel_is_called(
    pool: asyncpg.Pool,  # noqa: F811
    smtp: tuple[Relay, int],
    together: bool,
) -> None:
    relay, port = smtp
    configured = settings(port)
    feed = Feed()
    await a_case(pool, feed)
    async with pool.acquire() as conn:
        claimed = await store.claim_due(conn, ev.T0, 10)  # claimed and committed: the next step is the send
    assert len(claimed) == 2

    await processor(pool, ev.T0).process([feed.add(topics.COMMANDS, ev.withdraw(ev.VICTIM), "withdraw-1")])
    info = (await sends(pool))["victim_information"]
    assert (info["status"], info["detail"]) == ("cancelled", "withdrawn")

    the_sender = sender(pool, configured, ev.T0)
    if together:  # the claim goes on as the sender's loop would, with the rows it claimed before the stop
        finished: list[str] = []
        await the_sender.send_group(claimed, finished.append)
        assert sorted(finished) == sorted(r["notification_id"] for r in claimed), "each row finished once"
    else:
        for row in claimed:
            await the_sender._send_one(row, in_doubt=False)
    assert relay.to(VICTIM_EMAIL) == []
    assert len(relay.to(FACILITATOR_EMAIL)) == 1
    assert (await sends(pool))["victim_information"]["status"] == "cancelled"


async def test_1_a_send_in_doubt_that_gov_uk_notify_never_saw_is_cancelled_by_a_stop_since(
    pool: asyncpg.Pool,  # noqa: F811
    notify: NotifyStandIn,
) -> None:
    configured = settings(**notify.settings(), notify_email_via="govuk")
    feed = Feed()
    await a_case(pool, feed)
    async with pool.acquire() as conn:
        claimed = await store.claim_due(conn, ev.T0, 10)
        for row in claimed:  # the channel was about to be called when the process died
            await store.mark_started(conn, row["notification_id"], ev.T0)

    # A week later the victim withdraws; the sends still in doubt are not the stop's to cancel (they may have gone).
    week = ev.T0 + timedelta(days=7)
    await processor(pool, week).process([feed.add(topics.COMMANDS, ev.withdraw(ev.VICTIM), "withdraw-1")])
    assert (await sends(pool))["victim_information"]["status"] == "sending"

    assert await sender(pool, configured, week).resolve_in_doubt() == 2
    assert [a.recipient for a in notify.accepted] == [FACILITATOR_EMAIL]  # Notify never saw either; only staff's
    info = (await sends(pool))["victim_information"]
    assert (info["status"], info["detail"]) == ("cancelled", "withdrawn")
    cancelled = [f["data"] for f in await facts_out(pool) if f["type"] == "rj.notification.cancelled"]
    assert [c["kind"] for c in cancelled] == ["victim_information"]


# --- finding 2: a delivery problem with no facilitator to tell reaches the coordinators -----------------------


def body(message: EmailMessage) -> str:
    parts = [p.get_content() for p in message.walk() if p.get_content_type() in ("text/plain", "text/html")]
    return f"{message['Subject']}\n" + "\n".join(parts)


async def test_2_a_failed_message_on_a_case_with_no_facilitator_yet_is_told_to_the_coordinators(
    pool: asyncpg.Pool,  # noqa: F811
    smtp: tuple[Relay, int],
) -> None:
    relay, port = smtp
    relay.refused.add(VICTIM_EMAIL)
    configured = settings(port, notify_coordinator_email=COORDINATORS)
    # The victim's information goes on acceptance, before anyone is assigned; email is their only safe channel.
    await a_case(pool, Feed(), assigned=False, victim_safe=[Channel.email])
    await send_everything_due(sender(pool, configured, ev.T0))

    [told] = relay.to(COORDINATORS)
    assert "Message not delivered" in told["Subject"] and "WM/2026/1" in body(told)
    for personal in ("Vera", VICTIM_EMAIL, "1 Vic St", "07700900001", "Otto"):
        assert personal not in body(told)
    problem = (await sends(pool))["facilitator_delivery_problem"]
    assert problem["status"] == "sent"


async def test_2_a_facilitator_s_message_that_fails_is_told_to_the_coordinators(
    pool: asyncpg.Pool,  # noqa: F811
    smtp: tuple[Relay, int],
) -> None:
    relay, port = smtp
    relay.refused.add(FACILITATOR_EMAIL)
    configured = settings(port)  # no mailbox set: the staff email format's, with the id "coordinator"
    await a_case(pool, Feed())
    await send_everything_due(sender(pool, configured, ev.T0))

    assert (await sends(pool))["facilitator_assigned"]["status"] == "failed"
    [told] = relay.to("coordinator@rj-hub.example")
    assert "Message not delivered" in told["Subject"]


# --- finding 3: a 5xx or a dropped connection from GOV.UK Notify is looked up, not left uncertain ------------


@pytest.mark.parametrize(("fault", "created"), [("500", True), ("500", False), ("drop", True), ("drop", False)])
async def test_3_a_send_gov_uk_notify_answered_with_a_5xx_or_dropped_is_looked_up_and_goes_once(
    pool: asyncpg.Pool,  # noqa: F811
    notify: NotifyStandIn,
    fault: str,
    created: bool,
) -> None:
    configured = settings(**notify.settings(), notify_email_via="govuk")
    await a_case(pool, Feed(), assigned=False)
    if fault == "500":
        notify.fail_next(1, 500, record=created)
    else:
        notify.drop_next(1, record=created)
    await send_everything_due(sender(pool, configured, ev.T0))
    await send_everything_due(sender(pool, configured, ev.T0 + timedelta(minutes=5)))  # past the first backoff

    info = (await sends(pool))["victim_information"]
    [accepted] = notify.of_notification(info["notification_id"])
    assert (info["status"], info["provider_id"]) == ("sent", accepted.id)
    assert info["tries"] == (1 if created else 2)
    out = {f["type"] for f in await facts_out(pool)}
    assert "rj.notification.uncertain" not in out and "rj.notification.sent" in out


# --- finding 5: when every allowed channel fails for good, the message stops there ---------------------------


async def test_5_a_message_whose_every_allowed_channel_fails_for_good_is_tried_once_on_each_then_stops(
    pool: asyncpg.Pool,  # noqa: F811
    smtp: tuple[Relay, int],
) -> None:
    relay, port = smtp
    relay.refused.add(VICTIM_EMAIL)  # and "1 Vic St" is too short an address for a letter: both fail for good
    configured = settings(port)  # no GOV.UK Notify: no SMS
    await a_case(pool, Feed())
    the_sender = sender(pool, configured, ev.T0)
    for _ in range(10):  # bounded: before the fix it alternated between email and letter for ever
        if not await the_sender.send_due():
            break
    else:
        pytest.fail("still sending after 10 rounds")

    rows = [r for r in await store.sends_of(pool, ev.CASE) if r["kind"] == "victim_information"]  # type: ignore[arg-type]
    assert sorted((r["attempt"], r["channel"], r["status"]) for r in rows) == [
        (1, "email", "failed"), (2, "sms", "failed"), (3, "letter", "failed")
    ]  # fmt: skip
    # (no SMS sender here: that fails for good too)
    assert len(relay.to(FACILITATOR_EMAIL)) == 4  # the assignment, and each failure once


# --- finding 6: no send is left `sending` for ever -------------------------------------------------------------


async def test_6_a_message_that_cannot_be_composed_fails_for_good_and_the_facilitator_is_told(
    pool: asyncpg.Pool,  # noqa: F811
    smtp: tuple[Relay, int],
) -> None:
    relay, port = smtp
    configured = settings(port)
    await a_case(pool, Feed())
    real = Composer(configured, lambda: ev.T0)

    async def faulty(
        conn: asyncpg.Connection, row: asyncpg.Record, intent: store.SendIntent, case: NotifyCase | None
    ) -> Outbound | None:
        if row["kind"] == "victim_information":
            raise KeyError("due_by")  # a fault in putting it into words, not a ValueError
        return await real(conn, row, intent, case)

    the_sender = sender(pool, configured, ev.T0)
    the_sender.compose = faulty
    await send_everything_due(the_sender)

    info = (await sends(pool))["victim_information"]
    assert (info["status"], info["detail"]) == ("failed", "not composed: KeyError")
    [failed] = [f["data"] for f in await facts_out(pool) if f["type"] == "rj.notification.failed"]
    assert (failed["reason_code"], failed["permanent"]) == ("not_composed", True)
    told = [m for m in relay.to(FACILITATOR_EMAIL) if "Message not delivered" in m["Subject"]]
    assert len(told) == 1


async def test_6_a_send_in_doubt_whose_provider_cannot_be_asked_becomes_uncertain_after_its_rounds(
    pool: asyncpg.Pool,  # noqa: F811
    notify: NotifyStandIn,
) -> None:
    configured = settings(**notify.settings(), notify_email_via="govuk")
    await a_case(pool, Feed(), assigned=False)
    async with pool.acquire() as conn:
        [claimed] = await store.claim_due(conn, ev.T0, 10)
        await store.mark_started(conn, claimed["notification_id"], ev.T0)  # then the process died
    await notify.kill()  # and GOV.UK Notify cannot be reached

    for round_ in range(1, 4):  # each round after the lease (claimed_at is the database's clock: ask from later)
        later = datetime.now(UTC) + timedelta(days=round_)
        the_sender = sender(pool, configured, later)
        the_sender.max_tries = 3
        assert await the_sender.resolve_in_doubt() == 1
        info = (await sends(pool))["victim_information"]
        assert info["status"] == ("sending" if round_ < 3 else "uncertain")
    assert notify.accepted == []
    out = [f for f in await facts_out(pool) if f["type"] == "rj.notification.uncertain"]
    assert len(out) == 1
    problem = (await sends(pool))["facilitator_delivery_problem"]  # the coordinators are told
    assert problem["status"] == "waiting"


# --- finding 7: a stop takes back queued letters not printed yet ----------------------------------------------


async def test_7_a_withdrawal_takes_back_the_victim_s_queued_letter_before_it_is_printed(
    pool: asyncpg.Pool,  # noqa: F811
    smtp: tuple[Relay, int],
    tmp_path: Any,
) -> None:
    from schemas.common import Contact
    from services.notify.channels.letters import LetterQueue, LetterWithdrawn

    relay, port = smtp
    configured = settings(port)
    feed = Feed()
    home = Contact(email="vera@example.org", address="1 Vic Street\nWorcester\nWR1 1AA")
    await processor(pool, ev.T0).process(
        [
            feed.add(topics.SCHEDULING, registered(), "reg-ann"),
            feed.add(topics.REFERRAL, ev.opened(victim_contact=home), "opened"),
            feed.add(topics.REFERRAL, ev.accepted(), "accepted"),
            feed.add(topics.CONSENT, ev.assigned(), "assigned"),
            feed.add(topics.CONSENT, ev.safe_contact(ev.VICTIM, [Channel.letter], letters_to_home_ok=True), "safe"),
            feed.add(topics.REFERRAL, ev.victim_information_due(), "vi-due"),
        ]
    )
    await send_everything_due(sender(pool, configured, ev.T0))
    queue = LetterQueue(pool)
    [letter] = await queue.unprinted()
    assert (await sends(pool))["victim_information"]["status"] == "sent"  # queued

    await processor(pool, ev.T0).process([feed.add(topics.COMMANDS, ev.withdraw(ev.VICTIM), "withdraw-1")])

    assert await queue.unprinted() == []
    with pytest.raises(LetterWithdrawn):
        await queue.write_pdf(letter.letter_id, tmp_path / "letter.pdf", by="caseworker")
    assert not (tmp_path / "letter.pdf").exists()
    info = (await sends(pool))["victim_information"]
    assert (info["status"], info["detail"]) == ("cancelled", "letter withdrawn: withdrawn")
    cancelled = [f["data"] for f in await facts_out(pool) if f["type"] == "rj.notification.cancelled"]
    assert [(c["kind"], c["channel"]) for c in cancelled] == [("victim_information", "letter")]


# --- the sender's groups: a send that went is never sent again, even when recording it fails -----------------


async def test_a_group_whose_sends_went_but_could_not_be_recorded_sends_nothing_again_and_ends_uncertain(
    pool: asyncpg.Pool,  # noqa: F811
    smtp: tuple[Relay, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    relay, port = smtp
    configured = settings(port)
    await a_case(pool, Feed())
    the_sender = sender(pool, configured, ev.T0)
    the_sender.database_retry_s = 0.5  # tried again for half a second, then left in doubt

    async def database_gone(*_: Any, **__: Any) -> bool:
        raise ConnectionError("the database went away after the sends")

    monkeypatch.setattr(store, "finish", database_gone)
    claimed = await the_sender.claim_due(10)
    finished: list[str] = []
    await the_sender.send_group(claimed, finished.append)
    assert len(finished) == len(claimed) == 2, "each row finished (left in doubt), none stuck in a slot"
    assert len(relay.to(VICTIM_EMAIL)) == 1 and len(relay.to(FACILITATOR_EMAIL)) == 1
    assert {r["status"] for r in (await sends(pool)).values()} == {"sending"}
    monkeypatch.undo()

    # This process is gone (another claimer) and the lease has passed: SMTP cannot be asked, so: uncertain.
    later = datetime.now(UTC) + timedelta(days=1)
    assert await sender(pool, configured, later).resolve_in_doubt() == 2
    assert len(relay.to(VICTIM_EMAIL)) == 1, "never sent twice"
    statuses = {kind: r["status"] for kind, r in (await sends(pool)).items()}
    assert statuses["victim_information"] == "uncertain"


async def test_groups_whose_messages_have_no_address_do_not_empty_the_pool(
    pool: asyncpg.Pool,  # noqa: F811  (two connections, as small as the sender's own pool may be)
    smtp: tuple[Relay, int],
) -> None:
    _, port = smtp
    await a_case(pool, Feed())
    the_sender = sender(pool, settings(port), ev.T0)

    async def no_address(*_: Any) -> None:
        await asyncio.sleep(0.2)  # both groups are composing at once
        return None

    the_sender.compose = no_address  # type: ignore[method-assign]
    first, second = await the_sender.claim_due(1), await the_sender.claim_due(1)
    assert len(first) == len(second) == 1
    finished: list[str] = []
    together = asyncio.gather(
        the_sender.send_group(first, finished.append), the_sender.send_group(second, finished.append)
    )
    await asyncio.wait_for(together, timeout=10)
    assert len(finished) == 2
    ids = {first[0]["notification_id"], second[0]["notification_id"]}
    assert {r["status"] for r in (await sends(pool)).values() if r["notification_id"] in ids} == {"failed"}


async def test_a_bug_before_the_channel_is_not_tried_for_ever_and_frees_the_groups_slots(
    pool: asyncpg.Pool,  # noqa: F811
    smtp: tuple[Relay, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    relay, port = smtp
    await a_case(pool, Feed())
    the_sender = sender(pool, settings(port), ev.T0)

    def broken(*_: Any, **__: Any) -> None:
        raise TypeError("a bug in stop_reason")

    monkeypatch.setattr(domain, "stop_reason", broken)
    claimed = await the_sender.claim_due(10)
    finished: list[str] = []
    await asyncio.wait_for(the_sender.send_group(claimed, finished.append), timeout=10)
    assert sorted(finished) == sorted(r["notification_id"] for r in claimed)
    assert relay.to(VICTIM_EMAIL) == []
    assert {r["status"] for r in (await sends(pool)).values()} == {"sending"}, "claimed, never started: in doubt"


async def test_a_group_cut_off_at_shutdown_leaves_no_channel_call_running(
    pool: asyncpg.Pool,  # noqa: F811
    smtp: tuple[Relay, int],
) -> None:
    relay, port = smtp
    configured = settings(port)
    await a_case(pool, Feed())
    email = senders_from_settings(configured, pool)[Channel.email]
    started = asyncio.Event()

    class Slow:
        async def send(self, message: Any) -> Any:
            started.set()
            await asyncio.sleep(0.5)  # a slow provider
            return await email.send(message)

        async def lookup(self, notification_id: str) -> Any:
            return await email.lookup(notification_id)

    the_sender = sender(pool, configured, ev.T0, email=Slow())
    claimed = await the_sender.claim_due(10)
    group = asyncio.create_task(the_sender.send_group(claimed, lambda _: None))
    await asyncio.wait_for(started.wait(), 10)
    group.cancel()  # as the loop does to a group still running when a stopping process stops waiting
    await asyncio.gather(group, return_exceptions=True)
    await asyncio.sleep(1.5)
    assert relay.to(VICTIM_EMAIL) == [], "a channel call went on after its group was cut off"
