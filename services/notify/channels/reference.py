"""The reference a message carries outside the system: GOV.UK Notify's ``reference`` and the SMTP ``Message-ID``.

Our notification id is derived from the event that caused the message, its kind, the recipient and the attempt
(``domain.notification_id``), so that every replay decides the same id. Those inputs are not secret: an event id
is on our topics, a person id is in a case file. Handed out as it is, the id would let anyone who can read a
provider's logs or a mail relay's (Notify's staff, a recipient's mail host, an attacker in either) confirm
that a given person was written to about a given event. So what leaves the system is an HMAC-SHA256 of the id
under ``NOTIFY_REFERENCE_KEY`` (base64 of 32 bytes): the same id always gives the same reference (the dedupe
and the lookup after a crash still work), and without the key no one can go from a person and an event to a
reference or back.

Keys are rotated in two steps, so that no replica ever fails to find what another sent: first ``OLD,NEW``
everywhere (every replica can look up under both, all still send under the old), then ``NEW,OLD`` (new messages
take the new key; a lookup after a crash asks under each, so a message sent under the old key is still found),
and, once nothing sent under the old key can still be in doubt, ``NEW``. Before these references, the id itself
went out: nothing was deployed then, so nothing in doubt carries a raw id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

from services.notify.channels import ChannelConfigError
from services.runtime.settings import Settings


@dataclass(frozen=True)
class References:
    """Makes the outside reference of a notification id."""

    keys: tuple[bytes, ...] = field(repr=False)

    def __post_init__(self) -> None:
        if not self.keys or any(len(key) != 32 for key in self.keys):
            raise ChannelConfigError("NOTIFY_REFERENCE_KEY must be base64 of 32 bytes (comma-separated to rotate)")

    @classmethod
    def from_settings(cls, settings: Settings) -> References:
        value = settings.notify_reference_key.get_secret_value().strip()
        if not value:
            raise ChannelConfigError(
                "NOTIFY_REFERENCE_KEY is not set: messages cannot carry a reference that does not give away whom "
                "they are to (`rj notify new-reference-key` makes one)"
            )
        try:
            keys = tuple(base64.b64decode(part.strip(), validate=True) for part in value.split(",") if part.strip())
        except (binascii.Error, ValueError):
            raise ChannelConfigError("NOTIFY_REFERENCE_KEY is not base64") from None
        return cls(keys)

    def of(self, notification_id: str) -> str:
        """The reference a new message with this id goes out with (under the first key)."""
        return _reference(self.keys[0], notification_id)

    def every(self, notification_id: str) -> list[str]:
        """The references a message with this id may have gone out with: one per key, the newest first."""
        return [_reference(key, notification_id) for key in self.keys]


def _reference(key: bytes, notification_id: str) -> str:
    return hmac.new(key, notification_id.encode(), hashlib.sha256).hexdigest()[:32]


def new_reference_key() -> str:
    """A fresh value for ``NOTIFY_REFERENCE_KEY``."""
    return base64.b64encode(secrets.token_bytes(32)).decode()
