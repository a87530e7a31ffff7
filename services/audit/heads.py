"""Signed tree heads: a log's size, root hash and time, signed with the log's Ed25519 key, in the spirit of RFC
6962's TreeHeadSignature. A head a witness holds is what truncating or rewriting the log is detected against.

What is signed is a fixed byte layout (``tree_head_bytes``), never JSON, so that no serialiser's choices can
make two parties disagree on what a signature covers. The log id is the key's fingerprint (SHA-256 of its DER
SubjectPublicKeyInfo, as CT's LogID), so a head names the key that must have signed it.

Stdlib and ``cryptography`` only: an auditor is handed this file with ``merkle.py`` and ``check.py``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

HEAD_FORMAT_VERSION: Final = 1
TREE_HEAD_MAGIC: Final = b"RJ-AUDIT-TREE-HEAD"
"""Domain separation: a signature over a tree head can never be passed off as one over anything else."""
LISTING_MAGIC: Final = b"RJ-AUDIT-EXPORT-LISTING"

_HASH_SIZE: Final = 32
_SIGNATURE_SIZE: Final = 64
_U64: Final = 0xFFFF_FFFF_FFFF_FFFF


class HeadFormatError(ValueError):
    """A tree head, key or key file that is malformed or unsafe, with the reason."""


@dataclass(frozen=True)
class TreeHead:
    """What a log asserts at one moment: its first ``tree_size`` entries hash to ``root_hash``."""

    log_id: bytes
    tree_size: int
    root_hash: bytes
    timestamp_ms: int
    """Milliseconds since the Unix epoch (UTC), as CT's timestamps."""

    def __post_init__(self) -> None:
        if len(self.log_id) != _HASH_SIZE or len(self.root_hash) != _HASH_SIZE:
            raise HeadFormatError("log id and root hash are 32 bytes")
        if not 0 <= self.tree_size <= _U64 or not 0 <= self.timestamp_ms <= _U64:
            raise HeadFormatError("tree size and timestamp are unsigned 64-bit integers")


def tree_head_bytes(head: TreeHead) -> bytes:
    """The exact bytes a head's signature covers, format version 1 (99 bytes, integers big-endian unsigned):

    ``"RJ-AUDIT-TREE-HEAD" (18 ASCII bytes) | u8 version (1) | log id (32) | u64 tree size | u64 timestamp
    in ms | root hash (32)``.

    Fixed forever for version 1: a new layout takes a new version byte, and verifiers keep the old ones.
    """
    return (
        TREE_HEAD_MAGIC
        + bytes([HEAD_FORMAT_VERSION])
        + head.log_id
        + head.tree_size.to_bytes(8, "big")
        + head.timestamp_ms.to_bytes(8, "big")
        + head.root_hash
    )


@dataclass(frozen=True)
class SignedTreeHead:
    head: TreeHead
    signature: bytes

    def to_json(self) -> dict[str, Any]:
        """The head as the export file and the witness hold it: hashes in hex, the signature in base64."""
        return {
            "version": HEAD_FORMAT_VERSION,
            "log_id": self.head.log_id.hex(),
            "tree_size": self.head.tree_size,
            "timestamp_ms": self.head.timestamp_ms,
            "root_hash": self.head.root_hash.hex(),
            "signature": base64.b64encode(self.signature).decode(),
        }

    @classmethod
    def from_json(cls, value: Any) -> SignedTreeHead:
        if not isinstance(value, dict):
            raise HeadFormatError("a signed tree head is a JSON object")
        if value.get("version") != HEAD_FORMAT_VERSION:
            raise HeadFormatError(f"unknown tree head version {value.get('version')!r}")
        size, timestamp = value.get("tree_size"), value.get("timestamp_ms")
        # bool is an int to Python, never to JSON's readers.
        if not isinstance(size, int) or not isinstance(timestamp, int) or bool in (type(size), type(timestamp)):
            raise HeadFormatError("tree_size and timestamp_ms are integers")
        try:
            log_id = bytes.fromhex(value["log_id"])
            root = bytes.fromhex(value["root_hash"])
            signature = base64.b64decode(value["signature"], validate=True)
        except (KeyError, TypeError, ValueError, binascii.Error) as error:
            raise HeadFormatError(f"log_id and root_hash are hex, signature base64 ({error})") from error
        if len(signature) != _SIGNATURE_SIZE:
            raise HeadFormatError("an Ed25519 signature is 64 bytes")
        return cls(TreeHead(log_id, size, root, timestamp), signature)


# Keys ----------------------------------------------------------------------------------------------------------


def log_id(public_key: Ed25519PublicKey) -> bytes:
    """The key's fingerprint: SHA-256 of its DER SubjectPublicKeyInfo (CT's LogID, RFC 6962 section 3.2)."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).digest()


def public_key_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def load_public_key_pem(pem: str | bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
    except (ValueError, TypeError) as error:
        raise HeadFormatError(f"not a PEM public key ({error})") from error
    if not isinstance(key, Ed25519PublicKey):
        raise HeadFormatError("the log's key must be Ed25519")
    return key


def generate_signing_key(path: Path) -> Ed25519PrivateKey:
    """Make a new log key and write it as unencrypted PKCS#8 PEM, readable by its owner only (0600).

    The file is created with those permissions (never chmod-ed after), and an existing file is never
    overwritten: losing a log's key by accident would orphan every head it signed.
    """
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(pem)
    return key


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """Read the log key from a PEM file, refusing one that others than its owner may read or write: a key
    others could read could sign heads we never made."""
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise HeadFormatError(f"{path} is readable or writable by others (mode {mode & 0o777:o}); chmod 600 it")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as error:
        raise HeadFormatError(f"{path} is not an unencrypted PEM private key ({error})") from error
    if not isinstance(key, Ed25519PrivateKey):
        raise HeadFormatError(f"{path} is not an Ed25519 key")
    return key


# Signing and verifying -----------------------------------------------------------------------------------------


def sign_tree_head(key: Ed25519PrivateKey, tree_size: int, root_hash: bytes, timestamp_ms: int) -> SignedTreeHead:
    head = TreeHead(log_id(key.public_key()), tree_size, root_hash, timestamp_ms)
    return SignedTreeHead(head, key.sign(tree_head_bytes(head)))


def verify_tree_head(public_key: Ed25519PublicKey, signed: SignedTreeHead) -> bool:
    """True only if the head names this key's log and the signature over its bytes is this key's."""
    if signed.head.log_id != log_id(public_key):
        return False
    try:
        public_key.verify(signed.signature, tree_head_bytes(signed.head))
    except InvalidSignature:
        return False
    return True


# An export's listing -------------------------------------------------------------------------------------------


def export_listing_bytes(head: TreeHead, subject: str, entries: Sequence[tuple[int, bytes]]) -> bytes:
    """The bytes an export's listing signature covers, version 1: which entries (index and leaf hash, in
    order) the log handed over for ``subject`` (a case id) under ``head``. Inclusion proofs show each entry
    is in the log; only this listing shows the file lost none and reordered none after it was made.

    ``"RJ-AUDIT-EXPORT-LISTING" (23 ASCII bytes) | u8 version (1) | the 99 tree head bytes | u16 len(subject)
    | subject (UTF-8) | u64 count | count x (u64 index | leaf hash (32))``, integers big-endian unsigned.
    """
    name = subject.encode()
    if len(name) > 0xFFFF:
        raise HeadFormatError("subject too long")
    parts = [
        LISTING_MAGIC,
        bytes([HEAD_FORMAT_VERSION]),
        tree_head_bytes(head),
        len(name).to_bytes(2, "big"),
        name,
        len(entries).to_bytes(8, "big"),
    ]
    for index, leaf in entries:
        if len(leaf) != _HASH_SIZE or not 0 <= index <= _U64:
            raise HeadFormatError("a listed entry is a u64 index and a 32-byte leaf hash")
        parts.append(index.to_bytes(8, "big") + leaf)
    return b"".join(parts)


def sign_export_listing(
    key: Ed25519PrivateKey, head: TreeHead, subject: str, entries: Sequence[tuple[int, bytes]]
) -> bytes:
    return key.sign(export_listing_bytes(head, subject, entries))


def verify_export_listing(
    public_key: Ed25519PublicKey, head: TreeHead, subject: str, entries: Sequence[tuple[int, bytes]], signature: bytes
) -> bool:
    try:
        public_key.verify(signature, export_listing_bytes(head, subject, entries))
    except (InvalidSignature, HeadFormatError):
        return False
    return True
