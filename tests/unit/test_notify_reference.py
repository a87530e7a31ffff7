"""What leaves the system for a notification (GOV.UK Notify's ``reference``, the SMTP ``Message-ID``) is an HMAC of
its id: the same id always gives the same reference, another key another one, and the id itself never shows."""

from __future__ import annotations

import email
import email.policy
import uuid

import pytest
from pydantic import SecretStr

from schemas.common import Channel
from services.notify.channels import ChannelConfigError, Outbound
from services.notify.channels.reference import References, new_reference_key
from services.notify.channels.smtp import SmtpSender
from services.notify.messages import Rendered
from services.runtime.settings import Settings


def references(*keys: str) -> References:
    return References.from_settings(Settings(notify_reference_key=SecretStr(",".join(keys))))


def test_a_reference_is_the_same_for_an_id_under_one_key_and_another_under_another() -> None:
    one, other = new_reference_key(), new_reference_key()
    notification_id = str(uuid.uuid4())
    assert references(one).of(notification_id) == references(one).of(notification_id)
    assert references(one).of(notification_id) != references(other).of(notification_id)
    assert references(one).of(notification_id) != references(one).of(str(uuid.uuid4()))
    assert notification_id.replace("-", "") not in references(one).of(notification_id)


def test_while_keys_rotate_new_messages_take_the_first_and_a_lookup_asks_under_each() -> None:
    new, old = new_reference_key(), new_reference_key()
    notification_id = str(uuid.uuid4())
    rotating = references(new, old)
    assert rotating.of(notification_id) == references(new).of(notification_id)
    assert rotating.every(notification_id) == [references(new).of(notification_id), references(old).of(notification_id)]


GOOD_KEY = "cmotdGVzdC1yZWZlcmVuY2Uta2V5LTMyLWJ5dGVzISE="


@pytest.mark.parametrize("value", ["", "not base64!", "c2hvcnQ=", f"{GOOD_KEY},c2hvcnQ="])
def test_a_missing_or_wrong_key_is_refused_with_a_reason(value: str) -> None:
    with pytest.raises(ChannelConfigError, match="NOTIFY_REFERENCE_KEY"):
        references(value)


def test_an_emails_message_id_is_the_reference_never_the_notification_id() -> None:
    key = new_reference_key()
    smtp = SmtpSender(host="127.0.0.1", port=25, from_address="rj-hub@hub.example", references=references(key))
    notification_id = str(uuid.uuid4())
    rendered = Rendered(subject="Your meeting", text="Hello", html="<p>Hello</p>", sms="Hello")
    content = smtp.compose(Outbound(notification_id, Channel.email, "v@example.org", "V", rendered))
    message = email.message_from_bytes(content, policy=email.policy.default)
    assert message["Message-ID"] == f"<{references(key).of(notification_id)}@hub.example>"
    assert notification_id.encode() not in content


def test_smtp_without_a_reference_key_is_refused() -> None:
    with pytest.raises(ChannelConfigError, match="NOTIFY_REFERENCE_KEY"):
        SmtpSender(host="127.0.0.1", port=25, from_address="rj-hub@hub.example")
