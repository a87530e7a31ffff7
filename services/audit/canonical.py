"""The canonical bytes of an event: what a log entry stores and its leaf commits to.

JSON (every CloudEvent we write) is canonicalised with RFC 8785 (the JSON Canonicalization Scheme: sorted
keys, no whitespace, ECMAScript number form), so the same event always gives the same bytes whichever
serialiser wrote it, and replay or an auditor can parse them back. Bytes that are not JSON (an upstream
record kept whole and encrypted, for instance) are kept exactly as they are.

Upstream's records (``crime.events``) hold personal data in clear and are not ours to split into fields: the log
keeps each one sealed whole (beside its entry), and its leaf commits to the SHA-256 of the record's bytes, which
anyone holding the record can recompute (``rj audit verify --from-kafka`` does, from the topic) and no one can
read back.

Each form starts with one kind byte, so no two can collide: JSON bytes that happen to equal some raw
record's bytes still differ in their first byte, and a tombstone (a record with no value at all, Kafka's
"delete this key") is never the same entry as a record whose value is empty.

    b"J" + RFC 8785 bytes        a JSON value
    b"R" + the bytes unchanged   anything that is not JSON, or JSON RFC 8785 cannot represent exactly
    b"T"                         a tombstone: the record has no value (an empty value is b"R")
    b"D" + SHA-256 (32 bytes)    a record kept sealed elsewhere (crime.events): the digest of its bytes
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Final

import rfc8785

from schemas import topics

JSON_KIND: Final = b"J"
RAW_KIND: Final = b"R"
TOMBSTONE_KIND: Final = b"T"
DIGEST_KIND: Final = b"D"

KEPT_SEALED_WHOLE: Final = frozenset({topics.CRIME_EVENTS})
"""The topics whose records the log keeps sealed whole and commits to by digest (``entry_body``)."""


class NotCanonicalJson(ValueError):
    """A value RFC 8785 cannot canonicalise (a float NaN, an integer beyond I-JSON's range, a lone surrogate)."""


class Tombstone(enum.Enum):
    """What a tombstone's canonical bytes parse back to: no value, which JSON's ``null`` (``b"Jnull"``) is not."""

    TOMBSTONE = "tombstone"


TOMBSTONE: Final = Tombstone.TOMBSTONE


def canonical(value: Any) -> bytes:
    """``value`` is parsed JSON (dict, list, str, int, float, bool, None) or ``bytes`` kept as they are."""
    if isinstance(value, bytes | bytearray | memoryview):
        return RAW_KIND + bytes(value)
    try:
        return JSON_KIND + rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as error:
        raise NotCanonicalJson(str(error)) from error


def canonical_record(raw: bytes | None) -> bytes:
    """The canonical bytes of a record's value as read from a topic: ``TOMBSTONE_KIND`` when it has none, its
    JSON canonicalised when it is JSON that RFC 8785 represents exactly, otherwise its bytes unchanged.

    A duplicate object key, NaN or Infinity, or an integer beyond 2**53 would be silently changed by
    parsing and canonicalising, and an audit log must not change what it was given, so such records are
    kept raw.
    """
    if raw is None:
        return TOMBSTONE_KIND
    try:
        value = json.loads(raw, object_pairs_hook=_refuse_duplicate_keys, parse_constant=_refuse_constant)
        return canonical(value)
    except (ValueError, RecursionError):
        return RAW_KIND + bytes(raw)


def entry_body(topic: str, value: bytes | None) -> bytes:
    """What the log entry of a record of ``topic`` stores as its body and its leaf commits to: a function of the
    record alone (never of a key or the time), so the tree can be rebuilt from the topics themselves."""
    if value is not None and topic in KEPT_SEALED_WHOLE:
        return DIGEST_KIND + hashlib.sha256(value).digest()
    return canonical_record(value)


@dataclass(frozen=True)
class Digest:
    """What a digest's canonical bytes parse back to: the SHA-256 of a record kept sealed elsewhere."""

    sha256: bytes


def from_canonical(data: bytes) -> Any:
    """The parsed JSON value of canonical bytes, the raw bytes for a record that was kept as it was, or
    ``TOMBSTONE`` for a record that had no value, or the ``Digest`` of a record kept sealed elsewhere."""
    kind, body = data[:1], data[1:]
    if kind == JSON_KIND:
        return json.loads(body)
    if kind == RAW_KIND:
        return body
    if kind == TOMBSTONE_KIND:
        if body:
            raise ValueError("a tombstone's canonical bytes are its kind byte alone")
        return TOMBSTONE
    if kind == DIGEST_KIND:
        if len(body) != hashlib.sha256().digest_size:
            raise ValueError("a digest's canonical bytes are its kind byte and 32 bytes of SHA-256")
        return Digest(body)
    raise ValueError(f"unknown canonical kind byte {kind!r}")


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        raise ValueError("duplicate object key")
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
