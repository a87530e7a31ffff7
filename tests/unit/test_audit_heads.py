"""Signed tree heads: the fixed bytes they sign, Ed25519 signing and verifying, and the log key's file."""

from __future__ import annotations

import os
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.audit.heads import (
    HeadFormatError,
    SignedTreeHead,
    TreeHead,
    generate_signing_key,
    load_public_key_pem,
    load_signing_key,
    log_id,
    public_key_pem,
    sign_tree_head,
    tree_head_bytes,
    verify_tree_head,
)

ROOT = bytes(range(32))


def test_the_signed_bytes_are_the_documented_fixed_layout():
    head = TreeHead(log_id=b"\xaa" * 32, tree_size=0x0102, root_hash=ROOT, timestamp_ms=0x0A0B)
    encoded = tree_head_bytes(head)
    assert encoded == (
        b"RJ-AUDIT-TREE-HEAD" + b"\x01" + b"\xaa" * 32 + bytes(6) + b"\x01\x02" + bytes(6) + b"\x0a\x0b" + ROOT
    )
    assert len(encoded) == 99


def test_a_signed_head_verifies_with_its_logs_key_and_survives_json():
    key = Ed25519PrivateKey.generate()
    signed = sign_tree_head(key, 42, ROOT, 1_700_000_000_000)
    assert signed.head.log_id == log_id(key.public_key())
    assert verify_tree_head(key.public_key(), signed)
    assert SignedTreeHead.from_json(signed.to_json()) == signed


@pytest.mark.parametrize(
    "change",
    [
        {"tree_size": 43},
        {"timestamp_ms": 1_700_000_000_001},
        {"root_hash": bytes(32)},
    ],
)
def test_changing_any_signed_field_breaks_the_signature(change):
    key = Ed25519PrivateKey.generate()
    signed = sign_tree_head(key, 42, ROOT, 1_700_000_000_000)
    fields = {**signed.head.__dict__, **change}
    assert not verify_tree_head(key.public_key(), SignedTreeHead(TreeHead(**fields), signed.signature))


def test_a_head_signed_by_another_key_or_naming_another_log_does_not_verify():
    ours, theirs = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    forged = sign_tree_head(theirs, 42, ROOT, 1)
    assert not verify_tree_head(ours.public_key(), forged)
    relabelled = SignedTreeHead(TreeHead(log_id(ours.public_key()), 42, ROOT, 1), forged.signature)
    assert not verify_tree_head(ours.public_key(), relabelled)


def test_the_log_id_is_the_sha256_of_the_public_keys_der():
    import hashlib

    key = Ed25519PrivateKey.generate().public_key()
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert log_id(key) == hashlib.sha256(der).digest()
    assert log_id(load_public_key_pem(public_key_pem(key))) == log_id(key)


def test_a_generated_key_file_is_owner_only_and_loads_back(tmp_path):
    path = tmp_path / "log.pem"
    key = generate_signing_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert log_id(load_signing_key(path).public_key()) == log_id(key.public_key())


def test_an_existing_key_file_is_never_overwritten(tmp_path):
    path = tmp_path / "log.pem"
    generate_signing_key(path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        generate_signing_key(path)
    assert path.read_bytes() == before


def test_a_key_file_others_can_read_is_refused(tmp_path):
    path = tmp_path / "log.pem"
    generate_signing_key(path)
    os.chmod(path, 0o640)
    with pytest.raises(HeadFormatError, match="chmod 600"):
        load_signing_key(path)


def test_a_key_file_that_is_not_an_ed25519_key_is_refused(tmp_path):
    path = tmp_path / "log.pem"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    with pytest.raises(HeadFormatError):
        load_signing_key(path)


@pytest.mark.parametrize(
    "change",
    [
        {"version": 2},
        {"tree_size": "42"},
        {"tree_size": True},
        {"timestamp_ms": False},
        {"root_hash": "zz"},
        {"root_hash": "00"},
        {"signature": "not base64!"},
        {"signature": "AAAA"},
    ],
)
def test_a_malformed_head_in_json_is_refused_with_a_reason(change):
    signed = sign_tree_head(Ed25519PrivateKey.generate(), 42, ROOT, 1)
    with pytest.raises(HeadFormatError):
        SignedTreeHead.from_json({**signed.to_json(), **change})
