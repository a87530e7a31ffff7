"""GOV.UK Notify through its official client (notifications-python-client) over real HTTP, against a local
stand-in that answers the endpoints the client calls: email, SMS and letters under our notification id as the
reference; lookup by reference; and what each failure means (429 then success, 400 permanent, 500 and a dropped
connection uncertain until a lookup settles them, Notify unreachable temporary)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from schemas.common import Channel
from services.notify.channels import (
    ChannelConfigError,
    LookupFailed,
    Outbound,
    Outcome,
    SendResult,
    senders_from_settings,
)
from services.notify.channels.govuk import GovukNotify, GovukNotifySender, TokenBucket
from services.notify.messages import Rendered
from services.runtime.settings import Settings
from tests.support.notify_standin import REFERENCES, NotifyStandIn

pytestmark = pytest.mark.integration

EMAIL = "victim.marker-4410@example.org"
PHONE = "07700 900 441"
NAME = "Vivienne Marker-4410"
ADDRESS = "41 Marker Street\nWorcester\nWR1 4AB"
RENDERED = Rendered(
    subject="Your restorative justice meeting",
    text="Dear Vivienne,\nYour meeting is on Saturday.",
    html="<p>Dear Vivienne,</p>",
    sms="RJ: your meeting is on Saturday. To stop, call 01905 000000.",
)


@pytest.fixture
async def notify() -> AsyncIterator[NotifyStandIn]:
    async with NotifyStandIn() as standin:
        yield standin


def connection(standin: NotifyStandIn, **overrides: Any) -> GovukNotify:
    fields: dict[str, Any] = {"api_key": standin.api_key, "base_url": standin.base_url, "limiter": TokenBucket(500)}
    return GovukNotify(**(fields | overrides))


def sender(standin: NotifyStandIn, channel: Channel, notify: GovukNotify | None = None) -> GovukNotifySender:
    return GovukNotifySender(notify or connection(standin), channel, standin.templates[channel.value], REFERENCES)


def outbound(channel: Channel, **overrides: Any) -> Outbound:
    to = {Channel.email: EMAIL, Channel.sms: PHONE, Channel.letter: ADDRESS}[channel]
    fields: dict[str, Any] = {
        "notification_id": str(uuid.uuid4()),
        "channel": channel,
        "to": to,
        "recipient_name": NAME,
        "rendered": RENDERED,
    }
    return Outbound(**(fields | overrides))


def assert_safe_to_log(result: SendResult) -> None:
    for secret in (EMAIL, PHONE, "Marker", "Worcester", "@"):
        assert secret not in result.detail, result.detail


async def test_an_email_goes_with_our_notification_id_as_its_reference(notify: NotifyStandIn) -> None:
    message = outbound(Channel.email)
    result = await sender(notify, Channel.email).send(message)

    assert result.outcome is Outcome.sent
    [accepted] = notify.accepted
    assert result.provider_id == accepted.id
    reference = REFERENCES.of(message.notification_id)
    assert (accepted.type, accepted.reference, accepted.recipient) == ("email", reference, EMAIL)
    assert accepted.template_id == notify.templates["email"]
    assert accepted.personalisation == {"subject": RENDERED.subject, "body": RENDERED.text}


async def test_an_sms_carries_the_short_form(notify: NotifyStandIn) -> None:
    message = outbound(Channel.sms)
    result = await sender(notify, Channel.sms).send(message)
    assert result.outcome is Outcome.sent
    [accepted] = notify.accepted
    reference = REFERENCES.of(message.notification_id)
    assert (accepted.type, accepted.reference, accepted.recipient) == ("sms", reference, PHONE)
    assert accepted.personalisation == {"body": RENDERED.sms}


async def test_a_letter_carries_the_name_then_the_address_lines(notify: NotifyStandIn) -> None:
    message = outbound(Channel.letter)
    result = await sender(notify, Channel.letter).send(message)
    assert result.outcome is Outcome.sent
    [accepted] = notify.accepted
    assert accepted.type == "letter" and accepted.reference == REFERENCES.of(message.notification_id)
    assert accepted.personalisation == {
        "address_line_1": NAME,
        "address_line_2": "41 Marker Street",
        "address_line_3": "Worcester",
        "address_line_4": "WR1 4AB",
        "subject": RENDERED.subject,
        "body": RENDERED.text,
    }


@pytest.mark.parametrize("address", ["WR1 4AB", "1\n2\n3\n4\n5\n6\nWR1 4AB"])
async def test_a_letter_address_that_notify_cannot_print_is_refused_before_sending(
    notify: NotifyStandIn, address: str
) -> None:
    result = await sender(notify, Channel.letter).send(outbound(Channel.letter, to=address))
    assert result.outcome is Outcome.permanent_failure
    assert notify.requests == []


async def test_lookup_by_reference_finds_what_was_sent_on_that_channel_only(notify: NotifyStandIn) -> None:
    email = sender(notify, Channel.email)
    message = outbound(Channel.email)
    sent = await email.send(message)

    found = await email.lookup(message.notification_id)
    assert found is not None and found.outcome is Outcome.sent and found.provider_id == sent.provider_id
    assert await email.lookup(str(uuid.uuid4())) is None  # never seen: safe to send
    assert await sender(notify, Channel.sms).lookup(message.notification_id) is None


async def test_lookup_says_what_became_of_a_notification_notify_could_not_send(notify: NotifyStandIn) -> None:
    email = sender(notify, Channel.email)
    message = outbound(Channel.email)
    sent = await email.send(message)
    assert sent.provider_id is not None

    notify.set_status(sent.provider_id, "permanent-failure")
    bounced = await email.lookup(message.notification_id)
    notify.set_status(sent.provider_id, "technical-failure")
    failed_there = await email.lookup(message.notification_id)

    assert bounced is not None and bounced.outcome is Outcome.permanent_failure
    assert failed_there is not None and failed_there.outcome is Outcome.temporary_failure


async def test_a_429_delays_the_send_and_the_retry_goes_once(notify: NotifyStandIn) -> None:
    conn = connection(notify)
    email = sender(notify, Channel.email, conn)
    message = outbound(Channel.email)
    notify.fail_next(1, 429, retry_after=0.3)

    limited = await email.send(message)
    assert limited.outcome is Outcome.temporary_failure
    assert limited.retry_after_s == 0.3
    assert "RateLimitError" in limited.detail
    assert conn.limiter.held_until > 0  # every send of this process now waits out Notify's limit
    assert notify.of_notification(message.notification_id) == []

    retried = await email.send(message)
    assert retried.outcome is Outcome.sent
    assert [a.id for a in notify.of_notification(message.notification_id)] == [retried.provider_id]


async def test_a_429_without_retry_after_waits_the_configured_time(notify: NotifyStandIn) -> None:
    conn = connection(notify, retry_after_s=0.2)
    notify.fail_next(1, 429)
    result = await sender(notify, Channel.sms, conn).send(outbound(Channel.sms))
    assert result.outcome is Outcome.temporary_failure and result.retry_after_s == 0.2


async def test_a_400_is_a_permanent_failure(notify: NotifyStandIn) -> None:
    notify.fail_next(1, 400)
    result = await sender(notify, Channel.sms).send(outbound(Channel.sms))
    assert result.outcome is Outcome.permanent_failure
    assert result.detail == "notify 400 (ValidationError)"
    assert_safe_to_log(result)


async def test_notifys_own_validation_of_a_phone_number_is_a_permanent_failure(notify: NotifyStandIn) -> None:
    result = await sender(notify, Channel.sms).send(outbound(Channel.sms, to="not a number"))
    assert result.outcome is Outcome.permanent_failure
    assert notify.accepted == []


@pytest.mark.parametrize("created", [True, False])
async def test_a_500_is_uncertain_and_lookup_settles_it(notify: NotifyStandIn, created: bool) -> None:
    email = sender(notify, Channel.email)
    message = outbound(Channel.email)
    notify.fail_next(1, 500, record=created)

    result = await email.send(message)
    assert result.outcome is Outcome.uncertain
    assert_safe_to_log(result)

    found = await email.lookup(message.notification_id)
    if created:
        assert found is not None and found.outcome is Outcome.sent  # sending again would be a second message
        assert found.provider_id == notify.of_notification(message.notification_id)[0].id
    else:
        assert found is None  # Notify never made it: safe to send
        assert (await email.send(message)).outcome is Outcome.sent
    assert len(notify.of_notification(message.notification_id)) == 1


async def test_a_connection_dropped_after_the_request_is_uncertain_and_lookup_finds_the_message(
    notify: NotifyStandIn,
) -> None:
    email = sender(notify, Channel.email)
    message = outbound(Channel.email)
    notify.drop_next(1)

    result = await email.send(message)
    assert result.outcome is Outcome.uncertain
    assert result.detail == "notify connection lost after the request was sent"

    found = await email.lookup(message.notification_id)
    assert found is not None and found.outcome is Outcome.sent
    assert len(notify.of_notification(message.notification_id)) == 1


async def test_notify_unreachable_is_a_temporary_failure_and_a_lookup_fails_until_it_is_back(
    notify: NotifyStandIn,
) -> None:
    email = sender(notify, Channel.email)
    message = outbound(Channel.email)
    await notify.kill()

    result = await email.send(message)
    assert result.outcome is Outcome.temporary_failure
    assert result.detail == "notify unreachable: no connection made"
    with pytest.raises(LookupFailed):
        await email.lookup(message.notification_id)

    await notify.restart()
    assert await email.lookup(message.notification_id) is None
    assert (await email.send(message)).outcome is Outcome.sent


async def test_a_key_notify_does_not_know_is_refused(notify: NotifyStandIn) -> None:
    stranger = GovukNotify(f"rj_test-{notify.service_id}-{uuid.uuid4()}", notify.base_url, limiter=TokenBucket(500))
    result = await sender(notify, Channel.email, stranger).send(outbound(Channel.email))
    assert result.outcome is Outcome.permanent_failure
    assert result.detail == "notify 403 (AuthError)"
    assert notify.accepted == []


def test_a_malformed_api_key_is_a_configuration_error() -> None:
    with pytest.raises(ChannelConfigError):
        GovukNotify("not-a-key", "http://127.0.0.1:9")


async def test_settings_route_every_channel_through_notify(notify: NotifyStandIn) -> None:
    settings = Settings(notify_email_via="govuk", notify_letters_via="govuk", **notify.settings())
    senders = senders_from_settings(settings, pool=None)  # type: ignore[arg-type]  # no queued letter here
    for channel in (Channel.email, Channel.sms, Channel.letter):
        assert (await senders[channel].send(outbound(channel))).outcome is Outcome.sent
    assert sorted(a.type for a in notify.accepted) == ["email", "letter", "sms"]


def test_email_through_notify_without_a_key_is_a_configuration_error() -> None:
    with pytest.raises(ChannelConfigError):
        senders_from_settings(Settings(notify_email_via="govuk"), pool=None)  # type: ignore[arg-type]


def test_with_a_key_but_no_sms_template_no_sms_sender_is_made(notify: NotifyStandIn) -> None:
    settings = Settings(**(notify.settings() | {"govuk_notify_sms_template_id": ""}))
    senders = senders_from_settings(settings, pool=None)  # type: ignore[arg-type]
    assert Channel.sms not in senders and Channel.email in senders
