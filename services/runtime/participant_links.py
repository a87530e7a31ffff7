"""Participants' withdraw link tokens: minting and opening them (plumbing the API and the notify service share).

A link's token is opaque: AES-256-GCM over who it is for (case, person), what it does (withdraw), its own id and
when it expires, under ``settings.participant_link_key``. Whoever holds the key can make one: the API when staff
ask for a link, the notify service when it writes to a participant. Altering a single byte, or another key,
makes it refused. What a link does when opened (the pages, the withdrawal) is the API's: ``services.api.links``.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.runtime.settings import Settings

PURPOSE_WITHDRAW = "withdraw"

_VERSION = b"\x01"  # the token layout below; a new layout gets a new first byte
_AAD = b"rj.participant-link.v1"
_NONCE_BYTES = 12
#: Longer than any token we make (about 300 characters); anything longer is refused before decoding.
MAX_TOKEN_CHARS = 1024
_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9_-]+$")


class Refusal(StrEnum):
    """Why a link does not work; each has one plain message (see ``participant_text``)."""

    expired = "expired"
    used = "used"
    altered = "altered"  # not one of ours: changed, truncated, made with another key, or not a token at all
    not_allowed = "not_allowed"  # links are off on this case


class LinkRefused(Exception):
    """A link that cannot be used, and why (``reason_code``)."""

    def __init__(self, reason_code: Refusal) -> None:
        super().__init__(reason_code.value)
        self.reason_code = reason_code


class LinkKeyMissing(RuntimeError):
    """``participant_link_key`` is unset or not base64 of 32 bytes: no link can be made or opened."""


@dataclass(frozen=True, slots=True)
class LinkClaims:
    """What an authentic, unexpired link says: whose it is and what it may do."""

    purpose: str
    case_id: str
    person_id: str
    link_id: str
    expires_at: datetime


class _Sealed(BaseModel):
    """The plaintext inside a token. Authentic tokens are ours, so this is a check on our own minting."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    purpose: str
    case_id: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")
    person_id: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")
    link_id: str = Field(min_length=16, max_length=64)
    exp: int


def link_keys(settings: Settings) -> list[bytes]:
    """The link keys from settings, the one that seals new links first."""
    keys = []
    for entry in settings.participant_link_key.get_secret_value().split(","):
        if not entry.strip():
            continue
        try:
            key = base64.b64decode(entry.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise LinkKeyMissing("PARTICIPANT_LINK_KEY is not base64") from None
        if len(key) != 32:
            raise LinkKeyMissing("PARTICIPANT_LINK_KEY must be base64 of 32 bytes (AES-256)")
        keys.append(key)
    if not keys:
        raise LinkKeyMissing("PARTICIPANT_LINK_KEY is not set: participants' withdraw links cannot be made or opened")
    return keys


def new_link_key() -> str:
    """A fresh value for ``PARTICIPANT_LINK_KEY``."""
    return base64.b64encode(os.urandom(32)).decode()


def mint_link(
    settings: Settings, *, case_id: str, person_id: str, ttl_s: float | None = None, now: datetime | None = None
) -> str:
    """The withdraw link for ``person_id`` on ``case_id`` (``{public_base_url}/p/{token}``), working for ``ttl_s``
    (default ``participant_link_ttl_s``) from ``now``."""
    url, _, _ = issue_link(settings, case_id=case_id, person_id=person_id, ttl_s=ttl_s, now=now)
    return url


def issue_link(
    settings: Settings, *, case_id: str, person_id: str, ttl_s: float | None = None, now: datetime | None = None
) -> tuple[str, str, datetime]:
    """As ``mint_link``, with what recording who made it needs: ``(url, link id, expires at)``."""
    issued = now or datetime.now(UTC)
    expires = issued + timedelta(seconds=settings.participant_link_ttl_s if ttl_s is None else ttl_s)
    sealed = _Sealed(
        purpose=PURPOSE_WITHDRAW,
        case_id=case_id,
        person_id=person_id,
        link_id=secrets.token_urlsafe(16),
        exp=int(expires.timestamp()),
    )
    nonce = os.urandom(_NONCE_BYTES)
    box = AESGCM(link_keys(settings)[0]).encrypt(nonce, sealed.model_dump_json().encode(), _AAD)
    token = base64.urlsafe_b64encode(_VERSION + nonce + box).rstrip(b"=").decode()
    # The token keeps whole seconds: the expiry said is the one the link enforces.
    return f"{settings.public_base_url.rstrip('/')}/p/{token}", sealed.link_id, datetime.fromtimestamp(sealed.exp, UTC)


def open_link(settings: Settings, token: str, *, now: datetime | None = None) -> LinkClaims:
    """What ``token`` says, if it is authentic and unexpired; otherwise ``LinkRefused`` (``altered``, or
    ``expired``). Whether it was used, or is allowed on its case, takes the database: see the router."""
    keys = link_keys(settings)
    if len(token) > MAX_TOKEN_CHARS or not _TOKEN_CHARS.match(token):
        raise LinkRefused(Refusal.altered)
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise LinkRefused(Refusal.altered) from None
    if raw[:1] != _VERSION or len(raw) < 1 + _NONCE_BYTES + 16:
        raise LinkRefused(Refusal.altered)
    nonce, box = raw[1 : 1 + _NONCE_BYTES], raw[1 + _NONCE_BYTES :]
    for key in keys:
        try:
            plain = AESGCM(key).decrypt(nonce, box, _AAD)
            break
        except InvalidTag:
            continue
    else:
        raise LinkRefused(Refusal.altered)
    try:
        sealed = _Sealed.model_validate_json(plain)
    except ValidationError:
        raise LinkRefused(Refusal.altered) from None
    if sealed.purpose != PURPOSE_WITHDRAW:
        raise LinkRefused(Refusal.altered)
    expires_at = datetime.fromtimestamp(sealed.exp, UTC)
    if expires_at <= (now or datetime.now(UTC)):
        raise LinkRefused(Refusal.expired)
    return LinkClaims(sealed.purpose, sealed.case_id, sealed.person_id, sealed.link_id, expires_at)
