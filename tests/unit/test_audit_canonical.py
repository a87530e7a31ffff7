"""Canonical bytes of events: RFC 8785 for JSON, raw bytes kept whole, and a kind byte between them."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.audit import merkle
from services.audit.canonical import (
    TOMBSTONE,
    NotCanonicalJson,
    canonical,
    canonical_record,
    from_canonical,
)


def test_json_is_canonicalised_with_sorted_keys_no_whitespace_and_ecmascript_numbers():
    assert canonical({"b": [1.0, 0.1, 1e21], "a": "é", "c": None}) == b'J{"a":"\xc3\xa9","b":[1,0.1,1e+21],"c":null}'


def test_the_same_event_written_two_ways_has_one_canonical_form():
    event = {"specversion": "1.0", "id": "e1", "data": {"z": 1, "a": [True, False]}}
    compact = json.dumps(event, separators=(",", ":")).encode()
    pretty = json.dumps(event, indent=4, sort_keys=True).encode()
    assert canonical_record(compact) == canonical_record(pretty) == canonical(event)


def test_bytes_are_kept_as_they_are_behind_their_own_kind_byte():
    assert canonical(b"\x00\xffciphertext") == b"R\x00\xffciphertext"
    assert canonical_record(b"\x00\xffciphertext") == b"R\x00\xffciphertext"


def test_a_tombstone_and_an_empty_value_are_different_entries():
    tombstone, empty = canonical_record(None), canonical_record(b"")
    assert tombstone == b"T" and empty == b"R" and tombstone != empty
    leaf = merkle.entry_leaf_hash
    assert leaf("rj.commands", 0, 7, tombstone) != leaf("rj.commands", 0, 7, empty)
    assert from_canonical(tombstone) is TOMBSTONE and from_canonical(empty) == b""
    assert from_canonical(canonical(None)) is None  # JSON null is a value, not a tombstone


def test_a_tombstone_kind_with_bytes_after_it_is_refused():
    with pytest.raises(ValueError, match="tombstone"):
        from_canonical(b"Tx")


def test_json_and_raw_bytes_never_collide_even_when_the_bytes_are_the_json():
    assert canonical(b'{"a":1}') != canonical({"a": 1})


@pytest.mark.parametrize("raw", [b'{"a":1,"a":2}', b"[NaN]", b"[Infinity]", b"[1e400]", b"[9007199254740993]"])
def test_records_that_parsing_would_change_are_kept_raw(raw):
    assert canonical_record(raw) == b"R" + raw


def test_a_value_rfc_8785_cannot_represent_is_refused():
    with pytest.raises(NotCanonicalJson):
        canonical({"n": float("nan")})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@given(json_values)
def test_canonical_json_parses_back_to_the_value_and_is_stable(value):
    data = canonical(value)
    assert from_canonical(data) == value
    assert canonical_record(data[1:]) == data


@given(st.binary())
def test_raw_bytes_come_back_unchanged(raw):
    assert from_canonical(canonical(raw)) == raw
