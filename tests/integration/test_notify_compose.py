"""The sender with the real channels and the real words: a case's messages, composed from notify's state at send
time, reach a real SMTP server (aiosmtpd) in the recipient's own words, with their withdraw link, the venue and
how to arrive; a person whose preferred channel cannot be served falls to the next their record allows, and the
facilitator is told; no message carries another party's name or address."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from email.message import EmailMessage
from typing import Any

import asyncpg
import pytest
from pydantic import SecretStr

from schemas import topics
from schemas.common import Actor
from schemas.scheduling import FacilitatorRegistered, VenueKind, VenueRegistered
from services.notify import store
from services.notify.channels import CannotLookUp, senders_from_settings
from services.notify.compose import Composer
from services.notify.sender import Sender
from services.runtime.participant_links import new_link_key, open_link
from services.runtime.settings import Settings
from tests.integration.test_notify_intake import Feed, facts_out, pool, processor  # noqa: F401
from tests.support.smtp import Inbox, smtp_server
from tests.unit import notify_events as ev

pytestmark = pytest.mark.integration

STAFF = Actor(kind="staff", id="F-ADMIN")


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    with smtp_server(inbox) as port:
        yield inbox, port


def settings(port: int) -> Settings:
    return Settings(
        notify_smtp_host="127.0.0.1", notify_smtp_port=port, notify_smtp_tls="none",
        notify_from_address="rj-hub@hub.example", participant_link_key=SecretStr(new_link_key()),
        public_base_url="https://rj.hub.example",
    )  # fmt: skip


def registrations() -> list[Any]:
    return [
        FacilitatorRegistered(
            facilitator_id="F-ANN", specialist=False, working_hours=[], timezone="Europe/London",
            registered_at=ev.T0, registered_by=STAFF, email="ann.facil@hub.example", display_name="Ann Facil",
        ),
        VenueRegistered(
            venue_id="V-HUB", kind=VenueKind.community, name="Riverside Community Centre", visit_slots=[],
            timezone="Europe/London", registered_at=ev.T0, registered_by=STAFF,
            address="4 River Walk\nWorcester\nWR1 2AA", arrival="Use the side door on Mill Lane; you wait in room 2.",
        ),
    ]  # fmt: skip


async def send_everything_due(sender: Sender) -> None:
    while await sender.send_due():
        pass


def body(message: EmailMessage) -> str:
    parts = [p.get_content() for p in message.walk() if p.get_content_type() in ("text/plain", "text/html")]
    return f"{message['Subject']}\n" + "\n".join(parts)


async def test_a_case_s_messages_arrive_in_words_to_the_right_people_with_nothing_of_anyone_else(
    pool: asyncpg.Pool,  # noqa: F811
    smtp: tuple[Inbox, int],
) -> None:
    inbox, port = smtp
    configured = settings(port)
    feed = Feed()
    records = [feed.add(topics.SCHEDULING, r, f"reg-{i}") for i, r in enumerate(registrations())]
    records += [
        feed.add(topics.REFERRAL, ev.opened(), "opened"),
        feed.add(topics.REFERRAL, ev.accepted(), "accepted"),
        feed.add(topics.CONSENT, ev.assigned(), "assigned"),
        feed.add(topics.REFERRAL, ev.victim_information_due(), "vi-due"),
        feed.add(topics.SCHEDULING, ev.booked(starts_at=ev.T0 + timedelta(days=1)), "booked"),
    ]
    await processor(pool, ev.T0).process(records)
    senders = senders_from_settings(configured, pool)
    sender = Sender(pool, senders, Composer(configured, lambda: ev.T0), clock=lambda: ev.T0,
                    cannot_look_up=(CannotLookUp,))  # fmt: skip
    await send_everything_due(sender)

    victim = inbox.to("vera@example.org")
    assert sorted(m["Subject"] for m in victim) == sorted({m["Subject"] for m in victim})  # each once
    assert len(victim) == 2  # the RJ information and the meeting (its reminder would be due before now: none)
    meeting = next(m for m in victim if "Riverside Community Centre" in body(m))
    assert "Use the side door on Mill Lane" in body(meeting) and "WR1 2AA" in body(meeting)
    for message in victim:
        assert "Vera" in body(message)
        assert not any(theirs in body(message) for theirs in ("Otto", "otto@example.org", "2 Off Rd", "07700900002"))
    link = next(w for w in body(victim[0]).split() if w.startswith("https://rj.hub.example/p/"))
    claims = open_link(configured, link.rsplit("/", 1)[1].strip("<>\"'.,"), now=ev.T0)
    assert (claims.case_id, claims.person_id) == (ev.CASE, ev.VICTIM)

    # The offender prefers SMS, which this hub cannot send: it fails for good, the email (allowed) goes instead.
    offender = inbox.to("otto@example.org")
    assert len(offender) == 1 and "Riverside Community Centre" in body(offender[0])
    assert "Vera" not in body(offender[0]) and "vera@example.org" not in body(offender[0])

    staff = inbox.to("ann.facil@hub.example")
    kinds = sorted(r["kind"] for r in await store.sends_of(pool, ev.CASE) if r["status"] == "sent")  # type: ignore[arg-type]
    assert kinds.count("facilitator_delivery_problem") == 1 and kinds.count("facilitator_assigned") == 1
    assert len(staff) == 2
    for message in staff:
        for personal in ("Vera", "Otto", "vera@example.org", "otto@example.org", "07700900002", "1 Vic St"):
            assert personal not in body(message)
    failed = [f for f in await facts_out(pool) if f["type"] == "rj.notification.failed"]
    assert [(f["data"]["channel"], f["data"]["next_channel"]) for f in failed] == [("sms", "email")]


async def test_a_sensitive_case_s_messages_carry_no_withdraw_link(
    pool: asyncpg.Pool,  # noqa: F811
    smtp: tuple[Inbox, int],
) -> None:
    inbox, port = smtp
    configured = settings(port)
    feed = Feed()
    await processor(pool, ev.T0).process(
        [
            feed.add(topics.REFERRAL, ev.opened(), "opened"),
            feed.add(topics.REFERRAL, ev.accepted(sensitive=True), "accepted"),
            feed.add(topics.CONSENT, ev.risk_assessed(True), "assessed"),
            feed.add(topics.REFERRAL, ev.victim_information_due(), "vi-due"),
        ]
    )
    sender = Sender(pool, senders_from_settings(configured, pool), Composer(configured, lambda: ev.T0),
                    clock=lambda: ev.T0, cannot_look_up=(CannotLookUp,))  # fmt: skip
    await send_everything_due(sender)
    [info] = inbox.to("vera@example.org")
    assert "/p/" not in body(info) and "Vera" in body(info)
