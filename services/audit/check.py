"""The standalone checker of a case's audit export: what an auditor runs, with no database, broker or service,
to be sure the entries they were handed are in the log, untouched, complete as listed, and that the log's
head extends every earlier head they hold.

    python -m services.audit.check EXPORT.json [--log-id HEX]

prints what it verified, or the first thing that failed (which entry, what), and exits 0 or 1. Give
``--log-id`` the log id the witness published: without it, the checker can only say the file is consistent
with the key the file itself carries.

The export file, format version 1 (JSON)::

    {"format_version": 1,
     "log_id": hex, "public_key": PEM (Ed25519 SubjectPublicKeyInfo),
     "subject": the case id,
     "signed_head": {see heads.SignedTreeHead.to_json},
     "entries": [{"index", "topic", "partition", "offset",
                  "canonical": base64 of the entry's canonical bytes,
                  "inclusion_proof": [hex, ...]}, ...],            in increasing index order
     "listing": [{"index", "leaf_hash": hex}, ...],   what the log handed over, in order
     "listing_signature": base64 of the log key's signature over heads.export_listing_bytes(listing),
     "earlier_heads": [{"signed_head": {...}, "consistency_proof": [hex, ...]}, ...]}   optional

An entry's canonical bytes start with one kind byte: ``J`` and RFC 8785 JSON (the event as published), ``R`` and
the record's bytes unchanged (not JSON, or JSON that canonicalising would change), ``T`` alone for a tombstone (a
record with no value; an empty value is ``R`` alone). The checker hashes them as they are and needs none of this.

Imports only ``merkle`` and ``heads`` (stdlib and ``cryptography``): this file and those two are all an auditor
needs.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.audit import heads, merkle

EXPORT_FORMAT_VERSION: Final = 1


@dataclass(frozen=True)
class ExportEntry:
    index: int
    topic: str
    partition: int
    offset: int
    canonical: bytes
    inclusion_proof: Sequence[bytes]

    def leaf_hash(self) -> bytes:
        return merkle.entry_leaf_hash(self.topic, self.partition, self.offset, self.canonical)


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    problem: str
    """Empty when ``ok``; otherwise the first failure, naming the entry or head."""
    log_id: str = ""
    subject: str = ""
    tree_size: int = 0
    entries: int = 0
    earlier_heads: int = 0

    def summary(self) -> str:
        if not self.ok:
            return f"FAILED: {self.problem}"
        return (
            f"OK: {self.entries} entries of {self.subject!r} are in log {self.log_id} at size {self.tree_size}, "
            f"as listed and signed; {self.earlier_heads} earlier heads are consistent with it"
        )


class _Failure(Exception):
    pass


def write_export(
    key: Ed25519PrivateKey,
    signed_head: heads.SignedTreeHead,
    subject: str,
    entries: Sequence[ExportEntry],
    earlier_heads: Sequence[tuple[heads.SignedTreeHead, Sequence[bytes]]] = (),
) -> dict[str, Any]:
    """The export document for ``entries`` (increasing index order) under ``signed_head``: the format is
    written here, next to the code that reads it, so the two cannot drift apart."""
    listing = [(entry.index, entry.leaf_hash()) for entry in entries]
    return {
        "format_version": EXPORT_FORMAT_VERSION,
        "log_id": signed_head.head.log_id.hex(),
        "public_key": heads.public_key_pem(key.public_key()),
        "subject": subject,
        "signed_head": signed_head.to_json(),
        "entries": [
            {
                "index": entry.index,
                "topic": entry.topic,
                "partition": entry.partition,
                "offset": entry.offset,
                "canonical": base64.b64encode(entry.canonical).decode(),
                "inclusion_proof": [node.hex() for node in entry.inclusion_proof],
            }
            for entry in entries
        ],
        "listing": [{"index": index, "leaf_hash": leaf.hex()} for index, leaf in listing],
        "listing_signature": base64.b64encode(
            heads.sign_export_listing(key, signed_head.head, subject, listing)
        ).decode(),
        "earlier_heads": [
            {"signed_head": earlier.to_json(), "consistency_proof": [node.hex() for node in proof]}
            for earlier, proof in earlier_heads
        ],
    }


def check_export(document: Any, expected_log_id: str | None = None) -> CheckResult:
    """Check an export document (parsed JSON) and say whether it holds, or what first does not."""
    try:
        return _check(document, expected_log_id)
    except _Failure as failure:
        return CheckResult(ok=False, problem=str(failure))


def check_export_file(path: Path, expected_log_id: str | None = None) -> CheckResult:
    try:
        document = json.loads(path.read_bytes())
    except OSError as error:
        return CheckResult(ok=False, problem=f"cannot read {path}: {error.strerror or error}")
    except ValueError as error:
        return CheckResult(ok=False, problem=f"{path} is not JSON: {error}")
    return check_export(document, expected_log_id)


def _check(document: Any, expected_log_id: str | None) -> CheckResult:
    if not isinstance(document, dict):
        raise _Failure("the export is not a JSON object")
    if document.get("format_version") != EXPORT_FORMAT_VERSION:
        raise _Failure(f"unknown export format version {document.get('format_version')!r} (this checker reads 1)")

    try:
        public_key = heads.load_public_key_pem(_field(document, "public_key", str))
    except heads.HeadFormatError as error:
        raise _Failure(f"public key: {error}") from error
    key_log_id = heads.log_id(public_key)
    if _field(document, "log_id", str).lower() != key_log_id.hex():
        raise _Failure(f"the file's log id {document['log_id']} is not its public key's ({key_log_id.hex()})")
    if expected_log_id is not None and expected_log_id.lower() != key_log_id.hex():
        raise _Failure(f"this export is from log {key_log_id.hex()}, not the log {expected_log_id} you expect")

    signed_head = _signed_head(document.get("signed_head"), "the signed head")
    head = signed_head.head
    if head.log_id != key_log_id:
        raise _Failure(f"the signed head is of another log ({head.log_id.hex()}), not {key_log_id.hex()}")
    if not heads.verify_tree_head(public_key, signed_head):
        raise _Failure(f"the signed head (size {head.tree_size}) does not carry a valid signature of the log's key")

    subject = _field(document, "subject", str)
    entries = [_entry(position, value) for position, value in enumerate(_field(document, "entries", list))]

    listing = _listing(document.get("listing"))
    signature = _base64(_field(document, "listing_signature", str), "the listing signature")
    if not heads.verify_export_listing(public_key, head, subject, listing, signature):
        raise _Failure("the listing does not carry the log key's signature for this subject and head: it was changed")

    previous_index = -1
    for position, entry in enumerate(entries):
        where = f"entry {position} (log index {entry.index}, {entry.topic}/{entry.partition}@{entry.offset})"
        if entry.index <= previous_index:
            raise _Failure(f"{where} comes after log index {previous_index}: entries are out of order")
        if position >= len(listing):
            raise _Failure(f"{where} is not in the signed listing of {len(listing)} entries")
        listed_index, listed_leaf = listing[position]
        if entry.index != listed_index:
            raise _Failure(
                f"{where}: the signed listing has log index {listed_index} here (an entry was removed, added or moved)"
            )
        if entry.leaf_hash() != listed_leaf:
            raise _Failure(f"{where}: its bytes are not the ones the log listed (leaf hash {listed_leaf.hex()})")
        if entry.index >= head.tree_size:
            raise _Failure(f"{where} is beyond the signed head's {head.tree_size} entries")
        if not merkle.verify_inclusion(
            entry.leaf_hash(), entry.index, head.tree_size, entry.inclusion_proof, head.root_hash
        ):
            raise _Failure(
                f"{where}: its bytes and inclusion proof do not lead to the signed root "
                f"{head.root_hash.hex()} of size {head.tree_size}"
            )
        previous_index = entry.index
    if len(entries) < len(listing):
        missing_index = listing[len(entries)][0]
        raise _Failure(f"log index {missing_index} (entry {len(entries)} of the signed listing) is missing")

    earlier_heads = document.get("earlier_heads", [])
    if not isinstance(earlier_heads, list):
        raise _Failure("earlier_heads must be a list")
    for position, value in enumerate(earlier_heads):
        where = f"earlier head {position}"
        if not isinstance(value, dict):
            raise _Failure(f"{where} is not a JSON object")
        earlier = _signed_head(value.get("signed_head"), where).head
        where = f"{where} (size {earlier.tree_size}, {_when(earlier.timestamp_ms)})"
        if earlier.log_id != key_log_id:
            raise _Failure(f"{where} is of another log ({earlier.log_id.hex()})")
        if not heads.verify_tree_head(public_key, _signed_head(value.get("signed_head"), where)):
            raise _Failure(f"{where} does not carry a valid signature of the log's key")
        if earlier.tree_size > head.tree_size:
            raise _Failure(f"{where} is larger than the signed head's {head.tree_size}: the log was truncated")
        proof = _hashes(value.get("consistency_proof"), f"{where}'s consistency proof")
        if not merkle.verify_consistency(earlier.tree_size, head.tree_size, earlier.root_hash, head.root_hash, proof):
            raise _Failure(
                f"{where} is not consistent with the signed head of size {head.tree_size}: "
                "the log was rewritten or truncated since"
            )

    return CheckResult(
        ok=True,
        problem="",
        log_id=key_log_id.hex(),
        subject=subject,
        tree_size=head.tree_size,
        entries=len(entries),
        earlier_heads=len(earlier_heads),
    )


def _field(document: dict[str, Any], name: str, kind: type) -> Any:
    value = document.get(name)
    if not isinstance(value, kind):
        raise _Failure(f"{name!r} is missing or not a {kind.__name__}")
    return value


def _signed_head(value: Any, what: str) -> heads.SignedTreeHead:
    try:
        return heads.SignedTreeHead.from_json(value)
    except heads.HeadFormatError as error:
        raise _Failure(f"{what} is malformed: {error}") from error


def _listing(value: Any) -> list[tuple[int, bytes]]:
    if not isinstance(value, list):
        raise _Failure("'listing' is missing or not a list")
    listing = []
    for position, item in enumerate(value):
        if not isinstance(item, dict):
            raise _Failure(f"listing item {position} is not a JSON object")
        index = item.get("index")
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise _Failure(f"listing item {position}: index is a non-negative integer")
        leaf = _hashes([item.get("leaf_hash")], f"listing item {position}'s leaf hash")[0]
        listing.append((index, leaf))
    return listing


def _entry(position: int, value: Any) -> ExportEntry:
    where = f"entry {position}"
    if not isinstance(value, dict):
        raise _Failure(f"{where} is not a JSON object")
    numbers: list[int] = []
    for name in ("index", "partition", "offset"):
        number = value.get(name)
        if not isinstance(number, int) or isinstance(number, bool) or number < 0:
            raise _Failure(f"{where}: index, partition and offset are non-negative integers")
        numbers.append(number)
    topic = value.get("topic")
    if not isinstance(topic, str):
        raise _Failure(f"{where}: topic is a string")
    canonical = _base64(value.get("canonical"), f"{where}'s canonical bytes")
    proof = _hashes(value.get("inclusion_proof"), f"{where}'s inclusion proof")
    entry = ExportEntry(numbers[0], topic, numbers[1], numbers[2], canonical, proof)
    try:
        entry.leaf_hash()
    except ValueError as error:
        raise _Failure(f"{where}: {error}") from error
    return entry


def _base64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise _Failure(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error) as error:
        raise _Failure(f"{what} is not base64 ({error})") from error


def _hashes(value: Any, what: str) -> list[bytes]:
    if not isinstance(value, list) or not all(isinstance(node, str) for node in value):
        raise _Failure(f"{what} must be a list of hex hashes")
    try:
        nodes = [bytes.fromhex(node) for node in value]
    except ValueError as error:
        raise _Failure(f"{what} is not hex ({error})") from error
    if any(len(node) != merkle.HASH_SIZE for node in nodes):
        raise _Failure(f"{what} holds a hash that is not 32 bytes")
    return nodes


def _when(timestamp_ms: int) -> str:
    try:
        return datetime.fromtimestamp(timestamp_ms / 1000, UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return f"timestamp {timestamp_ms} ms"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.audit.check", description="Verify an audit export on its own."
    )
    parser.add_argument("file", type=Path, help="the export file (JSON)")
    parser.add_argument("--log-id", help="the log id (hex) the witness published; the file must be from that log")
    arguments = parser.parse_args(argv)
    result = check_export_file(arguments.file, arguments.log_id)
    print(result.summary())
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
