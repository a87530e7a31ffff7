"""Encrypting the personal fields of a document, found from the contract's ``x-pii`` marks; and whole records.

A document is a payload as ``model.model_dump(mode="json")`` gives it. The model's JSON Schema is compiled
once into a plan of where the marked values are (through ``$defs``/``$ref``, ``anyOf`` for optionals,
arrays, nested objects and maps). A marked value is encrypted whole (a Contact object, a list of time
windows, a date) and replaced by the string token::

    enc:v1:<key id>:<base64(nonce || AES-256-GCM ciphertext)>

whose plaintext is the value's JSON encoding, so it round-trips exactly, and whose additional data is
the key id and the field's name (a token moved into another field does not decrypt; a token moved with
its object, as a service copies a participant into its state or a later event, still does: that is how
services pass ciphertext on without reading it). ``null`` is left as it is: an unknown value says
nothing about a person. A value that already is a token is left as it is, so encrypting twice is
harmless; decrypting a value that is not a token (written before encryption) leaves it as it is.

Whose key (the ownership rule). The case is the document's subject, given by the caller. The person is
the ``person_id`` of the nearest object, from the marked value outwards, that has one as plain text (a
participant's fields are theirs; a top-level ``person_id`` owns the event's fields, so a contact
attempt's note belongs to the person tried; a ``person_id`` that is itself marked is owned by
the person it names). Anything else on the case belongs to the case's own key (person ``(case)``). A value
marked for the monitoring key (``schemas.pii.MonitoringPii``: age band, gender, ethnicity) is sealed under the
case's monitoring key (person ``(monitoring)``) whoever it is about, so erasing that person leaves it
readable while the rest of their data goes; the case's retention destroys it. A value marked for the case key
(``schemas.pii.CasePii``: who declined or withdrew) is sealed under the case's own key likewise.
Limits, said plainly: a field about a person named some other way (an
agreement item's ``description`` whose undertaker is ``owner_id``, staff's free text mentioning a
participant) is under the case key: erasing that person does not erase it; the case's retention (or
erasing the case) does. Marking the owner in the contract would close that gap.

Erasure. A token whose key was destroyed decrypts to a stand-in its schema accepts (null where the field
allows it, else ``"[erased]"``, an empty list or object; or a placeholder the caller picks), so a model
holding it still loads and nothing downstream breaks; its path is reported in ``Decrypted.erased``.
A value written for a person whose key on that case is already destroyed is not kept: the token
carries the key id and no ciphertext. A token that fails authentication, is malformed, or names a key
the store does not hold raises ``TamperedToken`` (a ``ValueError``: the data is at fault).

Bytes we cannot parse into fields are encrypted whole under a time-bucket key: ``encrypt_bytes``.

Use per batch: ``prepare_encrypt``/``prepare_decrypt`` every document, load every key they need into a
``KeyCache`` in one round trip, then ``seal``/``open`` without awaiting (``encrypt_batch`` and
``decrypt_batch`` do exactly that).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, NamedTuple

import asyncpg
import pydantic_core
from cryptography.exceptions import InvalidTag
from pydantic import BaseModel, TypeAdapter

from schemas.pii import CASE, MONITORING, is_pii, pii_key
from services.runtime.keystore import (
    CASE_PERSON,
    MONITORING_PERSON,
    NONCE_BYTES,
    BucketKey,
    DataKey,
    KeyCache,
    PersonCase,
)
from services.runtime.records import printable

TOKEN_PREFIX = "enc:v1:"
_PREFIX_LEN = len(TOKEN_PREFIX)


class TamperedToken(ValueError):
    """An encrypted value that cannot be authentic: altered, truncated, moved, or under an unknown key."""


def is_token(value: object) -> bool:
    return isinstance(value, str) and value.startswith(TOKEN_PREFIX)


_KEY_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def token_key_id(token: str) -> str:
    key_id, sep, _ = token[_PREFIX_LEN:].partition(":")
    if not sep or not _KEY_ID.fullmatch(key_id):
        raise TamperedToken(f"malformed encrypted value {printable(token[:60])!r}")
    return key_id


# --- the plan: where the marked values are ------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Marked:
    """The whole value here is personal data; ``erased`` is what stands in for it once its key is destroyed:
    a value its schema accepts (null where allowed, else an empty string, list or object). ``owner``: the
    key's owner when the contract names one (the monitoring key), instead of the ownership rule's."""

    erased: Any = None
    owner: str | None = None


ERASED_TEXT = "[erased]"
# Where a pattern refuses "[erased]" (an actor's kind): an erased actor was a person, never the system.
_ERASED_WORDS = (ERASED_TEXT, "erased", "unknown", "other", "participant")


def _erased_value(schema: dict[str, Any], defs: dict[str, Any], depth: int = 0) -> Any:
    """A stand-in for an erased value that still validates against ``schema`` (so a model holding it loads):
    null where allowed, an empty list, an object of its required properties' stand-ins, a first enum value,
    ``"[erased]"`` (or a plain word its pattern accepts), the epoch for a date or time, zero, false."""
    alternatives = schema.get("anyOf") or schema.get("oneOf") or [schema]
    if any(a.get("type") == "null" for a in alternatives) or depth > 8:
        return None
    first = alternatives[0]
    if "$ref" in first:
        return _erased_value(defs.get(first["$ref"].rsplit("/", 1)[-1], {}), defs, depth + 1)
    if "enum" in first:
        return first["enum"][0]
    if "const" in first:
        return first["const"]
    kind = first.get("type")
    if kind == "array":
        return [_erased_value(first["items"], defs, depth + 1) for _ in range(first.get("minItems", 0))]
    if kind == "object" or "properties" in first:
        props = first.get("properties", {})
        return {name: _erased_value(props[name], defs, depth + 1) for name in first.get("required", [])}
    if kind == "boolean":
        return False
    if kind in ("integer", "number"):
        return max(0, first.get("minimum", 0))
    return _erased_text(first)


def _erased_text(schema: dict[str, Any]) -> str:
    fmt = schema.get("format")
    if fmt == "date":
        return "1900-01-01"
    if fmt == "date-time":
        return "1900-01-01T00:00:00Z"
    if fmt == "time":
        return "00:00:00"
    pattern = schema.get("pattern")
    if pattern:
        candidates = [*_ERASED_WORDS, *re.findall(r"[a-z_]+", pattern)]
        return next((c for c in candidates if re.search(pattern, c)), ERASED_TEXT)
    return ERASED_TEXT


@dataclass(eq=False)
class _Object:
    fields: dict[str, _Node] = field(default_factory=dict)
    has_person_id: bool = False
    _entries: tuple[tuple[str, _Node, _Marked | None], ...] | None = None

    @property
    def entries(self) -> tuple[tuple[str, _Node, _Marked | None], ...]:
        """``fields`` as (name, node, the node when it is marked): the walk's inner loop, built once (after
        compiling, which fills ``fields`` late for a recursive model)."""
        if self._entries is None:
            self._entries = tuple((n, c, c if type(c) is _Marked else None) for n, c in self.fields.items())
        return self._entries


@dataclass(eq=False)
class _Array:
    items: _Node


@dataclass(eq=False)
class _Map:
    values: _Node


@dataclass(eq=False)
class _Union:
    alternatives: list[_Node]


_Node = _Marked | _Object | _Array | _Map | _Union


class _Compiler:
    def __init__(self, defs: dict[str, Any]) -> None:
        self.defs = defs
        self.done: dict[str, _Node | None] = {}

    def node(self, schema: dict[str, Any]) -> _Node | None:
        if is_pii(schema):
            owner = {MONITORING: MONITORING_PERSON, CASE: CASE_PERSON}.get(pii_key(schema) or "")
            return _Marked(_erased_value(schema, self.defs), owner)
        ref = schema.get("$ref")
        if isinstance(ref, str):
            name = ref.rsplit("/", 1)[-1]
            if name not in self.done:
                self.done[name] = _Object()  # a recursive model meets its own (still empty) plan
                self.done[name] = self.node(self.defs[name])
            return self.done[name]
        for combinator in ("anyOf", "oneOf", "allOf"):
            if combinator in schema:
                nodes = [n for n in (self.node(s) for s in schema[combinator]) if n is not None]
                if not nodes:
                    return None
                return nodes[0] if len(nodes) == 1 else _Union(nodes)
        if "properties" in schema or schema.get("type") == "object":
            obj = _Object(has_person_id="person_id" in schema.get("properties", {}))
            for name, prop in schema.get("properties", {}).items():
                child = self.node(prop)
                if child is not None:
                    obj.fields[name] = child
            extra = schema.get("additionalProperties")
            if isinstance(extra, dict) and (values := self.node(extra)) is not None:
                return _Union([obj, _Map(values)]) if obj.fields else _Map(values)
            return obj if obj.fields else None
        if isinstance(schema.get("items"), dict):
            items = self.node(schema["items"])
            return _Array(items) if items is not None else None
        return None


def personal_paths(model: Any) -> list[str]:
    """Every marked value's path in ``model`` (``[]`` for an array's items), e.g. for an inventory."""
    out: list[str] = []

    def walk(node: _Node | None, path: str, seen: frozenset[int]) -> None:
        if node is None or id(node) in seen:
            return
        if isinstance(node, _Marked):
            out.append(path)
        elif isinstance(node, _Object):
            for name, child in node.fields.items():
                walk(child, f"{path}.{name}", seen | {id(node)})
        elif isinstance(node, _Array):
            walk(node.items, f"{path}[]", seen)
        elif isinstance(node, _Map):
            walk(node.values, f"{path}.*", seen)
        else:
            for alternative in node.alternatives:
                walk(alternative, path, seen)

    walk(cipher_for(model).plan, "$", frozenset())
    return sorted(set(out))


# --- one document -------------------------------------------------------------------------------


class _Slot(NamedTuple):
    container: dict[str, Any] | list[Any]
    index: Any
    owner: str | None
    field: str
    path: str  # where it is (e.g. "$.participants[0].name"), for opening only: "" when sealing
    erased: Any  # the stand-in once the key is destroyed


_new_slot = tuple.__new__
"""``_new_slot(_Slot, (...))``: a ``_Slot`` made without the Python-level ``__new__`` a NamedTuple has (0.1 us
against 0.18 a value located, on every batch's path)."""


@dataclass(frozen=True)
class Decrypted:
    data: dict[str, Any]
    erased: tuple[str, ...]
    """Paths of the values whose key was destroyed (now the placeholder)."""


class PendingEncryption:
    """A document's copy with its marked values located; ``owners`` are the keys it needs."""

    def __init__(self, document: dict[str, Any], slots: list[_Slot], case_id: str) -> None:
        self.document = document
        self.slots = slots
        self.case_id = case_id

    @property
    def owners(self) -> set[PersonCase]:
        return {(s.owner or CASE_PERSON, self.case_id) for s in self.slots}

    def seal(self, keys: KeyCache) -> dict[str, Any]:
        sealed, case_id, to_json, by_pair = keys.sealed, self.case_id, pydantic_core.to_json, keys.by_pair
        for container, index, owner, field_name, _, _ in self.slots:
            key = by_pair.get((owner or CASE_PERSON, case_id)) or keys.for_owner(owner or CASE_PERSON, case_id)
            plaintext = to_json(container[index])
            # The same value of the same field under the same key, sealed once a batch: a person's name in
            # the state and in the case opened is one token (the same bytes, so this reveals only that they
            # are equal, which the facts already say).
            memo = (key.key_id, field_name, plaintext)
            token = sealed.get(memo)
            if token is None:
                token = sealed[memo] = _seal_value(keys, key, field_name, plaintext)
            container[index] = token
        return self.document


def _seal_value(keys: KeyCache, key: DataKey, field_name: str, plaintext: bytes) -> str:
    """The token for ``plaintext`` (a value's JSON) of ``field_name`` under ``key``, with a fresh nonce from the
    batch's supply (each handed out once); the additional data (key id and field) and the token's prefix are built
    once a (key, field) a batch: this is on every sealed value's path."""
    aead = key.aead
    if aead is None:
        return f"{TOKEN_PREFIX}{key.key_id}:"  # erased before it was written: keep nothing
    at = keys.next_nonce
    nonces = keys.nonces
    if at >= len(nonces):
        nonces = keys.nonces = os.urandom(NONCE_BYTES * 256)
        at = 0
    keys.next_nonce = at + NONCE_BYTES
    nonce = nonces[at : at + NONCE_BYTES]
    parts = keys.token_parts.get((key.key_id, field_name))
    if parts is None:
        parts = keys.token_parts[(key.key_id, field_name)] = (
            f"{TOKEN_PREFIX}{key.key_id}:",
            _field_aad(key.key_id, field_name),
        )
    return parts[0] + binascii.b2a_base64(nonce + aead.encrypt(nonce, plaintext, parts[1]), newline=False).decode()


def _field_aad(key_id: str, field_name: str) -> bytes:
    """A token's additional data: its key's id and its field's name (a token moved into another field fails)."""
    return f"{key_id}\x00{field_name}".encode()


_SCHEMA_STAND_IN: Any = object()
"""Default placeholder: the slot's own stand-in, a value its schema accepts (see ``_erased_value``)."""


class PendingDecryption:
    def __init__(self, document: dict[str, Any], slots: list[_Slot]) -> None:
        self.document = document
        self.slots = slots

    @property
    def key_ids(self) -> set[str]:
        return {token_key_id(s.container[s.index]) for s in self.slots}

    def open(self, keys: KeyCache, placeholder: Any = _SCHEMA_STAND_IN, case_id: str | None = None) -> Decrypted:
        """The document with its values opened. With ``case_id``, a value sealed under another case's key is
        refused: a token lifted from one case (or force) into another's event never opens there."""
        erased: list[str] = []
        for slot in self.slots:
            token: str = slot.container[slot.index]
            key_id = token_key_id(token)
            if not keys.loaded(key_id):
                raise KeyError(f"key {key_id} not loaded: load the batch's key ids first")
            key = keys.by_id(key_id)
            if key is None:
                raise TamperedToken(f"{slot.path}: encrypted under key {key_id}, which the key store does not hold")
            if case_id is not None and key.case_id != case_id:
                raise TamperedToken(f"{slot.path}: sealed for another case than this one ({printable(case_id[:60])})")
            if key.aead is None:
                slot.container[slot.index] = slot.erased if placeholder is _SCHEMA_STAND_IN else placeholder
                erased.append(slot.path)
            else:
                slot.container[slot.index] = _decrypt_value(token, key, slot.field, slot.path)
        return Decrypted(self.document, tuple(erased))


def _decrypt_value(token: str, key: DataKey, field_name: str, path: str) -> Any:
    assert key.aead is not None
    encoded = token[_PREFIX_LEN + len(key.key_id) + 1 :]
    try:
        blob = base64.b64decode(encoded, validate=True)
        if len(blob) <= NONCE_BYTES:
            raise TamperedToken(f"{path}: encrypted value under key {key.key_id} is truncated")
        plaintext = key.aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], _field_aad(key.key_id, field_name))
    except (binascii.Error, InvalidTag):
        raise TamperedToken(
            f"{path}: encrypted value under key {key.key_id} fails authentication (altered, or moved from "
            "another field)"
        ) from None
    return pydantic_core.from_json(plaintext)


class DocumentCipher:
    """Encrypts and decrypts the marked values of one model's documents (a pydantic model, or a dataclass
    whose fields carry the contract's marks, as services keep their state). Get one with ``cipher_for``."""

    def __init__(self, model: type[Any]) -> None:
        self.model = model
        if isinstance(model, type) and issubclass(model, BaseModel):
            schema = model.model_json_schema(mode="serialization")
        else:
            schema = TypeAdapter(model).json_schema(mode="serialization")
        self.plan = _Compiler(schema.get("$defs", {})).node(schema)

    @property
    def has_personal_data(self) -> bool:
        return self.plan is not None

    def prepare_encrypt(self, document: dict[str, Any], case_id: str, *, in_place: bool = False) -> PendingEncryption:
        """Locate the values to seal: in a copy of ``document``, or in it (``in_place``: a document the
        caller made for this, as ``model_dump`` does, need not be copied)."""
        slots: list[_Slot] = []
        copy = self._walk(self.plan, document, None, "", "$", slots, encrypting=True, in_place=in_place)
        return PendingEncryption(copy, slots, case_id)

    def prepare_decrypt(self, document: dict[str, Any], *, in_place: bool = False) -> PendingDecryption:
        slots: list[_Slot] = []
        copy = self._walk(self.plan, document, None, "", "$", slots, encrypting=False, in_place=in_place)
        return PendingDecryption(copy, slots)

    def encrypt(self, document: dict[str, Any], case_id: str, keys: KeyCache) -> dict[str, Any]:
        """Encrypt with keys already in ``keys`` (see ``prepare_encrypt(...).owners``); returns a copy."""
        return self.prepare_encrypt(document, case_id).seal(keys)

    def decrypt(
        self, document: dict[str, Any], keys: KeyCache, placeholder: Any = _SCHEMA_STAND_IN, case_id: str | None = None
    ) -> Decrypted:
        return self.prepare_decrypt(document).open(keys, placeholder, case_id)

    def _walk(
        self,
        node: _Node | None,
        value: Any,
        owner: str | None,
        field_name: str,
        path: str,
        slots: list[_Slot],
        *,
        encrypting: bool,
        in_place: bool = False,
    ) -> Any:
        """``value`` (a copy where the plan reaches, shared elsewhere; itself when ``in_place``), recording
        the marked slots in it."""
        return _walk(node, value, owner, field_name, None if encrypting else path, slots, encrypting, in_place)


def _walk(
    node: _Node | None,
    value: Any,
    owner: str | None,
    field_name: str,
    path: str | None,
    slots: list[_Slot],
    encrypting: bool,
    in_place: bool,
) -> Any:
    """See ``DocumentCipher._walk``. On the hot path of every batch, so kept to plain loops, inline tests and
    positional arguments; ``path`` is None when sealing (only opening reports paths: errors, erased values),
    so that no path is built for a value being sealed."""
    if node is None or value is None:
        return value
    kind = type(node)
    if kind is _Object:
        if type(value) is not dict:
            return value
        out = value if in_place else dict(value)
        if node.has_person_id:  # type: ignore[union-attr]
            person = value.get("person_id")
            if type(person) is str and person and not person.startswith(TOKEN_PREFIX):
                owner = person
        get = out.get
        for name, child, marked in node.entries:  # type: ignore[union-attr]
            item = get(name)
            if item is None:
                continue
            if marked is not None:
                if (type(item) is str and item.startswith(TOKEN_PREFIX)) is not encrypting:
                    slots.append(
                        _new_slot(
                            _Slot,
                            (out, name, marked.owner or owner, name, "" if path is None else f"{path}.{name}",
                             marked.erased),
                        )
                    )  # fmt: skip
            else:
                out[name] = _walk(
                    child, item, owner, name, None if path is None else f"{path}.{name}", slots, encrypting, in_place
                )
        return out
    if kind is _Array:
        if type(value) is not list:
            return value
        items = value if in_place else list(value)
        inner = node.items  # type: ignore[union-attr]
        marked = inner if type(inner) is _Marked else None
        for i, item in enumerate(items):
            if item is None:
                continue
            if marked is not None:
                if (type(item) is str and item.startswith(TOKEN_PREFIX)) is not encrypting:
                    slots.append(
                        _new_slot(
                            _Slot,
                            (
                                items,
                                i,
                                marked.owner or owner,
                                field_name,
                                "" if path is None else f"{path}[{i}]",
                                marked.erased,
                            ),
                        )  # fmt: skip
                    )
            else:
                items[i] = _walk(
                    inner, item, owner, field_name, None if path is None else f"{path}[{i}]", slots, encrypting,
                    in_place,
                )  # fmt: skip
        return items
    if kind is _Map:
        if type(value) is not dict:
            return value
        entries = value if in_place else dict(value)
        inner = node.values  # type: ignore[union-attr]
        marked = inner if type(inner) is _Marked else None
        for k, item in entries.items():
            if item is None:
                continue
            if marked is not None:
                if (type(item) is str and item.startswith(TOKEN_PREFIX)) is not encrypting:
                    slots.append(
                        _new_slot(
                            _Slot,
                            (
                                entries,
                                k,
                                marked.owner or owner,
                                field_name,
                                "" if path is None else f"{path}.{k}",
                                marked.erased,
                            ),
                        )  # fmt: skip
                    )
            else:
                entries[k] = _walk(
                    inner, item, owner, field_name, None if path is None else f"{path}.{k}", slots, encrypting,
                    in_place,
                )  # fmt: skip
        return entries
    if kind is _Union:
        # Apply every alternative that fits the value's shape: a mark in any of them is honoured.
        for alternative in node.alternatives:  # type: ignore[union-attr]
            value = _walk(alternative, value, owner, field_name, path, slots, encrypting, in_place)
        return value
    raise AssertionError("a marked value is handled by its container")


@cache
def cipher_for(model: Any) -> DocumentCipher:
    return DocumentCipher(model)


# --- batches ------------------------------------------------------------------------------------


async def encrypt_batch(
    conn: asyncpg.Connection, keys: KeyCache, items: Sequence[tuple[type[BaseModel], dict[str, Any], str]]
) -> list[dict[str, Any]]:
    """Encrypt (model, document, case id) items with one key-store round trip (none when cached)."""
    pending = [cipher_for(model).prepare_encrypt(document, case_id) for model, document, case_id in items]
    await keys.load(conn, pairs=set().union(*(p.owners for p in pending)))
    return [p.seal(keys) for p in pending]


async def decrypt_batch(
    conn: asyncpg.Connection,
    keys: KeyCache,
    items: Sequence[tuple[type[BaseModel], dict[str, Any]]],
    placeholder: Any = _SCHEMA_STAND_IN,
) -> list[Decrypted]:
    pending = [cipher_for(model).prepare_decrypt(document) for model, document in items]
    await keys.load(conn, key_ids=set().union(*(p.key_ids for p in pending)))
    return [p.open(keys, placeholder) for p in pending]


# --- whole records under a time-bucket key ------------------------------------------------------

BYTES_MAGIC = b"rjb1"
_BYTES_HEADER = len(BYTES_MAGIC) + 16


def encrypt_bytes(data: bytes, key: BucketKey, context: bytes = b"") -> bytes:
    """``data`` sealed under a bucket key: magic, key id, nonce, ciphertext. ``context`` (e.g. the topic) must
    be given again to decrypt."""
    if key.aead is None:
        raise ValueError(f"bucket {key.bucket} is past its retention: its key is destroyed")
    header = BYTES_MAGIC + uuid.UUID(key.key_id).bytes
    nonce = os.urandom(NONCE_BYTES)
    return header + nonce + key.aead.encrypt(nonce, data, header + context)


def bytes_key_id(blob: bytes) -> str:
    if len(blob) < _BYTES_HEADER + NONCE_BYTES or not blob.startswith(BYTES_MAGIC):
        raise TamperedToken("not a record sealed by encrypt_bytes")
    return str(uuid.UUID(bytes=blob[len(BYTES_MAGIC) : _BYTES_HEADER]))


def decrypt_bytes(blob: bytes, key: BucketKey, context: bytes = b"") -> bytes | None:
    """The record, or None when its bucket's key was destroyed (retention erased it)."""
    if bytes_key_id(blob) != key.key_id:
        raise ValueError(f"record is under key {bytes_key_id(blob)}, not {key.key_id}")
    if key.aead is None:
        return None
    header, nonce = blob[:_BYTES_HEADER], blob[_BYTES_HEADER : _BYTES_HEADER + NONCE_BYTES]
    try:
        return key.aead.decrypt(nonce, blob[_BYTES_HEADER + NONCE_BYTES :], header + context)
    except InvalidTag:
        raise TamperedToken(f"record under bucket key {key.key_id} fails authentication") from None


def models_with_personal_data(models: Iterable[type[BaseModel]]) -> list[type[BaseModel]]:
    return [m for m in models if cipher_for(m).has_personal_data]
