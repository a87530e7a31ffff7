"""The signed tree head as a fact of the contract (``rj.audit-head.signed`` on rj.audit): it round-trips through
the registry back to a head that verifies, its id is the same however often the same head is made into an event,
and a head changed on the way does not verify."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from schemas import topics
from schemas.audit import AuditHeadSigned
from schemas.registry import REGISTRY, ParseError, parse_event
from services.audit.app import SOURCE, head_event, signed_head_of
from services.audit.heads import log_id, sign_tree_head, verify_tree_head

KEY = Ed25519PrivateKey.generate()
SIGNED = sign_tree_head(KEY, 42, bytes(range(32)), 1_700_000_000_123)


def test_a_head_event_reads_back_through_the_contract_as_the_head_it_was_made_from():
    outgoing = head_event(SIGNED)
    event = parse_event(outgoing.value)
    assert isinstance(event.data, AuditHeadSigned) and event.type == "rj.audit-head.signed"
    assert outgoing.topic == topics.AUDIT and outgoing.key == event.subject == log_id(KEY.public_key()).hex()
    assert event.source == SOURCE and event.time.timestamp() * 1000 == pytest.approx(SIGNED.head.timestamp_ms)
    assert signed_head_of(event.data) == SIGNED and verify_tree_head(KEY.public_key(), signed_head_of(event.data))


def test_the_same_head_always_gets_the_same_event_id_and_another_head_another():
    assert head_event(SIGNED).event_id == head_event(SIGNED).event_id == parse_event(head_event(SIGNED).value).id
    later = sign_tree_head(KEY, 42, bytes(range(32)), 1_700_000_000_124)
    assert head_event(later).event_id != head_event(SIGNED).event_id


def test_a_head_event_whose_root_was_changed_no_longer_verifies():
    document = json.loads(head_event(SIGNED).value)
    document["data"]["root_hash"] = "00" * 32
    changed = parse_event(json.dumps(document).encode())
    assert isinstance(changed.data, AuditHeadSigned)
    assert not verify_tree_head(KEY.public_key(), signed_head_of(changed.data))


@pytest.mark.parametrize(
    "field, value",
    [("root_hash", "AB" * 32), ("log_id", "00"), ("signature", "not base64"), ("tree_size", -1)],
)
def test_a_malformed_head_event_is_refused_by_the_contract_with_the_field_named(field, value):
    document = json.loads(head_event(SIGNED).value)
    document["data"][field] = value
    with pytest.raises(ParseError, match=field):
        REGISTRY.parse(json.dumps(document).encode())
