"""Facts the audit log publishes about itself on ``rj.audit`` (subject and key: the log id, the hex SHA-256 of its
public key), so that the log can be checked by someone who holds neither our database nor our trust.

``AuditHeadSigned`` is a signed tree head, as the witness file holds it: the signature covers a fixed byte layout
of (log id, size, time, root) that ``services/audit/heads.py`` defines (never this JSON), so a verifier rebuilds
those bytes from the fields and checks them against the log's Ed25519 public key. Whoever can write to the topic
can publish a head; only the log's key can make one that verifies.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from schemas.envelope import EventData

_HASH_HEX = r"^[0-9a-f]{64}$"
_U64 = 2**64 - 1


class AuditHeadSigned(EventData):
    """The audit log signed its tree head: its first ``tree_size`` entries hash to ``root_hash`` (RFC 6962 Merkle
    Tree Hash), at ``timestamp_ms``. The event's id is derived from the log id, size and time, so a retried signing
    cannot publish one head twice."""

    event_type: ClassVar[str] = "rj.audit-head.signed"

    log_id: str = Field(pattern=_HASH_HEX, description="SHA-256 of the log key's DER SubjectPublicKeyInfo, hex")
    tree_size: int = Field(ge=0, le=_U64, description="How many entries the head covers")
    timestamp_ms: int = Field(ge=0, le=_U64, description="When it was signed, milliseconds since the Unix epoch")
    root_hash: str = Field(pattern=_HASH_HEX, description="The Merkle Tree Hash of the first tree_size entries, hex")
    signature: str = Field(
        pattern=r"^[A-Za-z0-9+/]{86}==$", description="Ed25519 signature over the head's signed bytes, base64"
    )
    format_version: int = Field(ge=1, le=255, description="The layout of the signed bytes (heads.py): 1")


AUDIT_EVENTS: tuple[type[EventData], ...] = (AuditHeadSigned,)
