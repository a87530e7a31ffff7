"""Facts the audit log publishes about itself on ``rj.audit`` (subject and key: the log id, the hex SHA-256 of its
public key), so that the log can be checked by someone who holds neither our database nor our trust.

``AuditHeadSigned`` is a signed tree head, as the witness file holds it: the signature covers a fixed byte layout
of (log id, size, time, root) that ``services/audit/heads.py`` defines (never this JSON), so a verifier rebuilds
those bytes from the fields and checks them against the log's Ed25519 public key. Whoever can write to the topic
can publish a head; only the log's key can make one that verifies.

``AuditEntriesAppended`` says in which order the log appended records, which Kafka alone cannot say (the log
interleaves every partition of every topic as it reads them): published before each head for the entries since
the previous one, it lets the tree be rebuilt from the topics alone when the log's database is lost. It needs no
signature: the head's root is over the leaves in this order, so an order or a leaf that was changed gives
another root.
"""

from __future__ import annotations

import base64
import binascii
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

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


class AppendedRun(BaseModel):
    """``count`` records of one partition, at consecutive offsets from ``first_offset``, appended one after the
    other: each one's leaf hash (32 bytes, in order) in ``leaf_hashes``."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    topic: str = Field(min_length=1, max_length=249, description="The logical topic name, without a deployment prefix")
    partition: int = Field(ge=0, le=2**31 - 1)
    first_offset: int = Field(ge=0, le=2**63 - 1)
    count: int = Field(ge=1)
    leaf_hashes: str = Field(
        pattern=r"^[A-Za-z0-9+/]*={0,2}$", description="The records' leaf hashes, 32 bytes each, concatenated, base64"
    )

    @model_validator(mode="after")
    def _one_leaf_per_record(self) -> AppendedRun:
        try:
            size = len(base64.b64decode(self.leaf_hashes, validate=True))
        except (ValueError, binascii.Error) as error:
            raise ValueError(f"leaf_hashes is not base64 ({error})") from None
        if size != 32 * self.count:
            raise ValueError(f"leaf_hashes holds {size} bytes, not 32 for each of {self.count} records")
        return self

    def leaves(self) -> list[bytes]:
        data = base64.b64decode(self.leaf_hashes)
        return [data[i : i + 32] for i in range(0, len(data), 32)]


class AuditEntriesAppended(EventData):
    """The log appended, as its entries ``first_index`` onwards, the records of ``runs`` in that order. Its id is
    derived from the log id and the entries it covers, so a retried signing publishes it once."""

    event_type: ClassVar[str] = "rj.audit-entries.appended"

    log_id: str = Field(pattern=_HASH_HEX, description="The log it is the order of (as AuditHeadSigned's)")
    first_index: int = Field(ge=0, le=_U64, description="The index of the first record of the first run")
    runs: list[AppendedRun] = Field(min_length=1)

    @property
    def entries(self) -> int:
        return sum(run.count for run in self.runs)


AUDIT_EVENTS: tuple[type[EventData], ...] = (AuditHeadSigned, AuditEntriesAppended)
