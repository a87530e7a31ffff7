"""Personal data at the runtime's edges: encrypted wherever a service writes it, opened where it reads it.

Every service gets this from the runtime, driven by the contract's ``x-pii`` marks (``fieldcrypt``), not by
code of its own:

- **facts and answers** going to the outbox (and so to our topics) have their marked fields sealed under
  the data key of the person they belong to on the event's case (``seal_outgoing``, called by
  ``write_outbox``);
- **records taken in** that carry sealed values are opened before they are validated, so a service's
  handler sees plain, typed models (``open_documents``; the processor does it for a whole batch with one
  key-store query). A value whose key was destroyed (erased) opens as a stand-in its schema accepts;
- **state** a service keeps as JSON documents is sealed on save and opened on load (``seal_json`` and
  ``open_json``, for its store's types that carry marks; a type without marks costs nothing);
- **whole records** we cannot split into fields (dead letters, parked events, their copies on
  ``rj.deadletter``) are sealed whole under the key of the day they were written (``seal_bytes``), which
  retention destroys.

A ``Batch`` holds the keys one transaction uses (one query per batch, however many events); the
processor opens one per batch and ``batch()`` gives the current one (or a fresh one outside a batch).
Keys are read and created on the transaction's own connection: a key made by a batch that rolls back is
rolled back with it.

``Privacy.disabled()`` turns all of it off: only for measuring its cost (``PII_ENCRYPTION=false``) and for
tests of the runtime's plumbing that do not concern personal data. A service started without master keys
and without that switch refuses to start.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
import pydantic_core
from pydantic import BaseModel

from services.runtime.fieldcrypt import (
    TOKEN_PREFIX,
    Decrypted,
    PendingEncryption,
    bytes_key_id,
    cipher_for,
    decrypt_bytes,
    encrypt_bytes,
)
from services.runtime.keystore import (
    CASE_PERSON,
    MONITORING_PERSON,
    BucketKey,
    KeyCache,
    KeyStore,
    MasterKeys,
    PersonCase,
)
from services.runtime.settings import Settings

if TYPE_CHECKING:
    from services.runtime.outbox import Outgoing

M = TypeVar("M", bound=BaseModel)

_NO_VALUES = (None, "[]", "{}", "null")
"""JSON texts with nothing in them to seal."""

_CASE_KEYS = (None, CASE_PERSON, MONITORING_PERSON)
"""Owners that are the case's own keys, not a person's: what the ownership rule gives them needs no vouching."""

SEALED_MARK = TOKEN_PREFIX.encode()
"""What a record's bytes contain when some value in it is sealed (a quick test before parsing)."""


@dataclass
class Privacy:
    """The process's key store (``None``: encryption off)."""

    store: KeyStore | None

    @classmethod
    def from_settings(cls, settings: Settings) -> Privacy:
        if not settings.pii_encryption:
            return cls.disabled()
        return cls(KeyStore(MasterKeys.from_settings(settings)))

    @classmethod
    def disabled(cls) -> Privacy:
        return cls(None)

    @property
    def enabled(self) -> bool:
        return self.store is not None

    def new_batch(self) -> Batch:
        return Batch(self)


_installed: Privacy = Privacy.disabled()
_current: ContextVar[Batch | None] = ContextVar("rj_privacy_batch", default=None)


def install(privacy: Privacy) -> None:
    """Make ``privacy`` the process's (a service does it on start, from its settings)."""
    global _installed
    _installed = privacy


def installed() -> Privacy:
    return _installed


@contextmanager
def batch_scope(privacy: Privacy | None = None) -> Iterator[Batch]:
    """A fresh key cache for one transaction, current until the block ends."""
    batch = (privacy or _installed).new_batch()
    token = _current.set(batch)
    try:
        yield batch
    finally:
        _current.reset(token)


def batch() -> Batch:
    """The current transaction's keys (a fresh set when no batch is open)."""
    return _current.get() or _installed.new_batch()


@dataclass
class Batch:
    privacy: Privacy
    _keys: KeyCache | None = None
    _buckets: dict[str, BucketKey] = field(default_factory=dict)
    _expected: set[PersonCase] = field(default_factory=set)
    """Keys the batch will seal under later (``expect``): loaded with the next ones it seals under now."""
    _read_sealed: dict[int, tuple[BaseModel, str, str]] = field(default_factory=dict)  # id -> (model, text, case)
    """Models ``open_models`` made from sealed text, by identity, with that text: see ``seal_models``."""

    @property
    def enabled(self) -> bool:
        return self.privacy.enabled

    @property
    def keys(self) -> KeyCache:
        assert self.privacy.store is not None
        if self._keys is None:
            self._keys = KeyCache(self.privacy.store)
        return self._keys

    async def people_on(self, conn: asyncpg.Connection, case_id: str) -> set[PersonCase]:
        """(person, case) for each person the key store holds a key of on ``case_id`` (see ``KeyStore.people_on``);
        none when encryption is off."""
        if not self.enabled:
            return set()
        assert self.privacy.store is not None
        return {(person, case_id) for person in await self.privacy.store.people_on(conn, case_id)}

    # --- documents (payloads and state), field by field --------------------------------------------

    async def seal_documents(
        self,
        conn: asyncpg.Connection,
        model: Any,
        documents: Sequence[tuple[dict[str, Any], str]],
        *,
        owned: bool = False,
        owner: str | None = None,
        people: Collection[PersonCase] | None = None,
    ) -> list[dict[str, Any]]:
        """``(document, case id)`` pairs with their marked values sealed: copies, or the documents themselves
        when ``owned`` (made for this, as ``model_dump`` makes them: nothing else holds them). ``owner`` seals
        every value under that one owner's key on the case instead of the contract's ownership rule (a
        client's command under the case's own key: a key is how the store knows a person is on a case).
        ``people``: the (person, case) pairs known to be on their case; a value the rule gives to anyone else
        goes under the case's own key, so that no key is made for an id nobody vouched for (a client's
        command naming a participant: theirs, gone with their erasure)."""
        cipher = cipher_for(model)
        if not self.enabled or not cipher.has_personal_data or not documents:
            return [d for d, _ in documents]
        pending = [cipher.prepare_encrypt(d, case_id, in_place=owned) for d, case_id in documents]
        if owner is not None:
            for p in pending:
                p.slots = [slot._replace(owner=owner) for slot in p.slots]
        elif people is not None:
            for p in pending:
                p.slots = [
                    slot
                    if slot.owner in _CASE_KEYS or (slot.owner, p.case_id) in people
                    else slot._replace(owner=CASE_PERSON)
                    for slot in p.slots
                ]
        return await self._seal_pending(conn, pending)

    async def seal_each(
        self, conn: asyncpg.Connection, items: Sequence[tuple[Any, dict[str, Any], str]], *, owned: bool = False
    ) -> list[dict[str, Any]]:
        """``seal_documents`` (the contract's ownership rule) for (model, document, case id) items of any models:
        every key they need loaded in one round trip."""
        if not self.enabled:
            return [d for _, d, _ in items]
        ciphers = [cipher_for(model) for model, _, _ in items]
        pending = [
            cipher.prepare_encrypt(d, case_id, in_place=owned) if cipher.has_personal_data else None
            for cipher, (_, d, case_id) in zip(ciphers, items, strict=True)
        ]
        sealed = iter(await self._seal_pending(conn, [p for p in pending if p is not None]))
        return [d if p is None else next(sealed) for p, (_, d, _) in zip(pending, items, strict=True)]

    def expect(self, pairs: Iterable[PersonCase]) -> None:
        """Say that this batch will seal under these (person, case) keys later (e.g. a fact about a case being opened
        needs the case's monitoring key, while its state is sealed first): they are loaded, or made, in the same
        round trip as the next keys it seals under, instead of in one of their own."""
        if self.enabled:
            self._expected.update(pairs)

    async def _seal_pending(
        self, conn: asyncpg.Connection, pending: Sequence[PendingEncryption]
    ) -> list[dict[str, Any]]:
        """Each located document sealed, every key they need (and those expected) loaded first in one round trip."""
        owners = set().union(*(p.owners for p in pending))
        if owners:
            owners |= self._expected
            self._expected = set()
            await self.keys.load(conn, pairs=owners)
        return [p.seal(self.keys) for p in pending]

    async def open_documents(
        self,
        conn: asyncpg.Connection,
        model: Any,
        documents: Sequence[dict[str, Any]],
        case_ids: Sequence[str] | None = None,
        *,
        owned: bool = False,
    ) -> list[Decrypted]:
        """``documents`` with their sealed values opened (erased ones as their stand-ins); with ``case_ids``
        (one a document), a value sealed for another case is refused. Raises ``TamperedToken`` (a
        ``ValueError``) for a value that cannot be authentic."""
        cipher = cipher_for(model)
        if not cipher.has_personal_data or not documents:
            return [Decrypted(d, ()) for d in documents]
        pending = [cipher.prepare_decrypt(d, in_place=owned) for d in documents]
        key_ids = set().union(*(p.key_ids for p in pending))
        if not key_ids:
            return [Decrypted(p.document, ()) for p in pending]
        if not self.enabled:
            raise RuntimeError("sealed personal data met with encryption switched off (PII_ENCRYPTION=false)")
        await self.keys.load(conn, key_ids=key_ids)
        cases: Sequence[str | None] = case_ids if case_ids is not None else [None] * len(pending)
        return [p.open(self.keys, case_id=case) for p, case in zip(pending, cases, strict=True)]

    async def seal_json(
        self, conn: asyncpg.Connection, model: Any, documents: Sequence[tuple[str | None, str]]
    ) -> list[str | None]:
        """JSON texts of ``model`` (``None`` kept as it is) with their marked values sealed, per case id."""
        if not self.enabled or not cipher_for(model).has_personal_data:
            return [d for d, _ in documents]
        present = [
            (i, pydantic_core.from_json(d), case) for i, (d, case) in enumerate(documents) if d not in _NO_VALUES
        ]
        sealed = await self.seal_documents(conn, model, [(d, case) for _, d, case in present], owned=True)
        out: list[str | None] = [d for d, _ in documents]
        for (i, _, _), document in zip(present, sealed, strict=True):
            out[i] = pydantic_core.to_json(document).decode()
        return out

    async def seal_models(
        self, conn: asyncpg.Connection, model: Any, items: Sequence[tuple[BaseModel | None, str]]
    ) -> list[str | None]:
        """Pydantic ``model`` instances (or None) as JSON texts, their marked values sealed, per case id. One
        that ``open_models`` read in this batch and nobody replaced (models are frozen) is written back as the
        text it was read from: its tokens are passed on, not opened and sealed again."""
        if not self.enabled or not cipher_for(model).has_personal_data:
            return [m.model_dump_json() if m is not None else None for m, _ in items]
        out: list[str | None] = [None] * len(items)
        present = []
        for i, (m, case) in enumerate(items):
            if m is None:
                continue
            read = self._read_sealed.get(id(m))
            if read is not None and read[0] is m and read[2] == case:  # its tokens are bound to the case read under
                out[i] = read[1]
            else:
                present.append((i, m.model_dump(mode="json"), case))
        sealed = await self.seal_documents(conn, model, [(d, case) for _, d, case in present], owned=True)
        for (i, _, _), document in zip(present, sealed, strict=True):
            out[i] = pydantic_core.to_json(document).decode()
        return out

    async def open_models(
        self, conn: asyncpg.Connection, model: type[M], texts: Sequence[str | None], case_ids: Sequence[str]
    ) -> list[M | None]:
        """JSON texts of ``model`` (or None) as models, their sealed values opened, each bound to its case; a
        model that was read sealed is remembered with its text, for ``seal_models`` to pass on unchanged."""
        opened = await self.open_json(conn, model, texts, case_ids)
        out: list[M | None] = []
        for text, plain, case_id in zip(texts, opened, case_ids, strict=True):
            instance = model.model_validate_json(plain) if plain else None
            if instance is not None and plain is not text and isinstance(text, str):
                self._read_sealed[id(instance)] = (instance, text, case_id)
            out.append(instance)
        return out

    async def open_json(
        self,
        conn: asyncpg.Connection,
        model: Any,
        documents: Sequence[str | bytes | None],
        case_ids: Sequence[str] | None = None,
    ) -> list[str | bytes | None]:
        """JSON texts of ``model`` with their sealed values opened (with ``case_ids``, one a text, bound to
        their case); text without any is returned untouched."""
        todo = [(i, d) for i, d in enumerate(documents) if d is not None and has_sealed_values(d)]
        if not todo:
            return list(documents)
        cases = [case_ids[i] for i, _ in todo] if case_ids is not None else None
        documents_ = [pydantic_core.from_json(d) for _, d in todo]
        opened = await self.open_documents(conn, model, documents_, cases, owned=True)
        out = list(documents)
        for (i, _), document in zip(todo, opened, strict=True):
            out[i] = pydantic_core.to_json(document.data)
        return out

    # --- outgoing events ---------------------------------------------------------------------------

    async def seal_outgoing(self, conn: asyncpg.Connection, messages: Sequence[Outgoing]) -> list[Outgoing]:
        """``messages`` with the marked fields of their events sealed under the event's case (its subject),
        serialised (``Outgoing.event_of`` leaves an event with personal data to be serialised here, once)."""
        todo = [(i, m.event) for i, m in enumerate(messages) if m.event is not None and has_personal_data(m.event.data)]
        if not todo:
            return list(messages)
        out = list(messages)
        if not self.enabled:
            for i, event in todo:
                m = out[i]
                out[i] = type(m)(m.event_id, m.topic, m.key, event.to_json(), event)
            return out
        if any(not event.subject for _, event in todo):  # a bug in a service: never write it unsealed
            raise ValueError("an event with personal data has no subject (case) to seal it under")
        by_model: dict[type[Any], list[tuple[int, Any]]] = {}
        for i, event in todo:
            by_model.setdefault(type(event.data), []).append((i, event))
        for model, events in by_model.items():
            documents = [(e.data.model_dump(mode="json"), e.subject) for _, e in events]
            sealed = await self.seal_documents(conn, model, documents, owned=True)
            for (i, event), data in zip(events, sealed, strict=True):
                m = out[i]
                out[i] = type(m)(m.event_id, m.topic, m.key, event.to_json(pydantic_core.to_json(data)), event)
        return out

    # --- whole records -----------------------------------------------------------------------------

    async def seal_bytes(
        self, conn: asyncpg.Connection, data: bytes, context: bytes, when: datetime | None = None
    ) -> bytes:
        """``data`` sealed whole under the key of the day ``when`` (now) falls in; ``context`` (what the bytes
        are, e.g. a dead letter's id) must be given again to open them."""
        if not self.enabled:
            return data
        assert self.privacy.store is not None
        when = when or datetime.now(UTC)
        day = when.date().isoformat()
        key = self._buckets.get(day)
        if key is None:
            key = self._buckets[day] = await self.privacy.store.bucket_key(conn, when)
        return encrypt_bytes(data, key, context)

    async def open_bytes(self, conn: asyncpg.Connection, blob: bytes, context: bytes) -> bytes | None:
        """Bytes sealed by ``seal_bytes`` (anything else is returned as it is: written before encryption);
        ``None`` when retention destroyed their day's key."""
        if not is_sealed_bytes(blob):
            return blob
        if self.privacy.store is None:
            raise RuntimeError("a sealed record met with encryption switched off (PII_ENCRYPTION=false)")
        key_id = bytes_key_id(blob)
        keys = await self.privacy.store.bucket_keys_by_id(conn, [key_id])
        if key_id not in keys:
            raise ValueError(f"record sealed under bucket key {key_id}, which the key store does not hold")
        return decrypt_bytes(blob, keys[key_id], context)


def has_sealed_values(document: str | bytes) -> bool:
    """Whether a record's bytes or a JSON text hold any sealed value (a quick test before parsing)."""
    if isinstance(document, str):
        return TOKEN_PREFIX in document
    return SEALED_MARK in document


def is_sealed_bytes(blob: bytes) -> bool:
    try:
        bytes_key_id(blob)
    except ValueError:
        return False
    return True


def has_personal_data(data: object) -> bool:
    """Whether ``data`` (a payload) is of a type the contract marks personal fields in."""
    model: Any = type(data)
    return cipher_for(model).has_personal_data
