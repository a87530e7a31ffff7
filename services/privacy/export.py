"""Subject access: everything we hold on one person, and nothing of anyone else's.

Their cases come from the privacy service's index (who is on which case, from ``rj.case.opened``) and from
the key store (every case a data key was made for them on). Those cases' facts are read from our topics
(kept for ever) from the beginning, and in each, only the person's own personal values are kept:

- an encrypted value (``enc:v1:`` token) only when its key is the person's key on that case; it is
  decrypted with that key, or shown as erased when it was destroyed;
- a value sealed under the case's own key (``CasePii``: who declined or withdrew, who was removed from a
  meeting) only when it names the person: it is opened with the case's key (unwrapped only on the person's
  cases), and kept when it is a naming field with their id, an actor that is them, or
  the role beside such a field; the event is then theirs (their decline, say) though no plain id names them;
- a value under the case's monitoring key (``schemas.pii.MonitoringPii``: their age band, gender, ethnicity; the
  date and outcome of a later offence on ``rj.case.reoffence-recorded``) only when the object holding it names
  the person as its plain ``person_id``: it is about them, and outlives their own key. Besides the person's own
  keys, the case's key and its monitoring key are the only ones unwrapped;
- a plain value (written before encryption, or by an upstream system) only when fieldcrypt's ownership
  rule gives it to the person (the nearest plain ``person_id`` is theirs); shown as erased when their key
  on that case is destroyed.

Values under another person's key, the case's key when they name someone else, or owned by someone else, are
left out, and so are
fields that are not personal data. An event that names the person but holds none of their values is listed
(type and time) with no values. Corrections (``rj.participant.rectified``) supersede earlier values in
``current``, the person's participant fields as they now stand.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg
import pydantic_core

from schemas import topics
from schemas.registry import REGISTRY
from services.privacy import store
from services.privacy.domain import RECTIFIABLE
from services.runtime import topicread
from services.runtime.fieldcrypt import PendingDecryption, cipher_for, token_key_id
from services.runtime.keystore import CASE_PERSON, MONITORING_PERSON, KeyCache, KeyStore
from services.runtime.keystore import SCHEMA as KEYSTORE
from services.runtime.settings import Settings

if TYPE_CHECKING:
    from aiokafka import ConsumerRecord

#: Where our facts are: every service's own topic.
FACT_TOPICS = tuple(sorted(set(topics.OUTPUT_OF.values())))
ERASED = "(erased)"
_NAMING_FIELDS = ("person_id", "erased_person_id")


@dataclass
class ExportedEvent:
    topic: str
    offset: int
    event_id: str
    type: str
    time: str
    values: dict[str, Any] = field(default_factory=dict)
    erased: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"type": self.type, "time": self.time, "id": self.event_id, "data": self.values, "erased": self.erased}


@dataclass
class ExportedCase:
    case_id: str
    role: str | None
    erased: bool
    events: list[ExportedEvent] = field(default_factory=list)
    current: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "case_id": self.case_id,
            "role": self.role,
            "erased": self.erased,
            "current": self.current,
            "events": [e.as_json() for e in self.events],
        }


@dataclass(frozen=True)
class FactRecord:
    topic: str
    partition: int
    offset: int
    case_id: str
    value: bytes


async def read_case_facts(settings: Settings, case_ids: set[str]) -> list[FactRecord]:
    """Every record on our fact topics keyed by one of ``case_ids``, from the beginning to the end (as it is
    now, or a little later)."""
    if not case_ids:
        return []
    wanted = {c.encode() for c in case_ids}
    found: list[FactRecord] = []

    def take(topic: str, partition: int, record: ConsumerRecord[bytes, bytes]) -> None:
        if record.key in wanted and record.value is not None:
            found.append(FactRecord(topic, partition, record.offset, record.key.decode(), record.value))

    await topicread.read_from_the_start(settings, FACT_TOPICS, take)
    return found


def _names(document: Any, person_id: str) -> bool:
    """Whether ``document`` names the person anywhere (as a plain person id)."""
    if isinstance(document, dict):
        return any(document.get(f) == person_id for f in _NAMING_FIELDS) or any(
            _names(v, person_id) for v in document.values()
        )
    if isinstance(document, list):
        return any(_names(v, person_id) for v in document)
    return False


def _path(path: str) -> str:
    return path.removeprefix("$.").removeprefix("$")


@dataclass(frozen=True)
class Parsed:
    record: FactRecord
    envelope: dict[str, Any]


def parse_records(records: Iterable[FactRecord]) -> list[Parsed]:
    """The records that are events of a type the contract knows, in the order they happened."""
    parsed = []
    for record in records:
        try:
            envelope = pydantic_core.from_json(record.value)
        except ValueError:
            continue
        if not isinstance(envelope, dict) or not isinstance(envelope.get("type"), str):
            continue
        if envelope["type"] not in REGISTRY:
            continue
        if not isinstance(envelope.get("data"), dict):
            continue
        parsed.append(Parsed(record, envelope))
    return sorted(parsed, key=lambda p: (str(p.envelope.get("time", "")), p.record.topic, p.record.offset))


def token_key_ids(parsed: Sequence[Parsed]) -> set[str]:
    ids: set[str] = set()
    for p in parsed:
        cipher = cipher_for(REGISTRY.model(p.envelope["type"]))
        if cipher.has_personal_data:
            for slot in cipher.prepare_decrypt(p.envelope["data"]).slots:
                ids.add(token_key_id(slot.container[slot.index]))
    return ids


async def key_owners(conn: asyncpg.Connection, key_ids: Iterable[str]) -> dict[str, tuple[str, str]]:
    """Key id -> (person id, case id), read without unwrapping anything."""
    ids = [i for i in set(key_ids) if _is_uuid(i)]
    rows = await conn.fetch(
        f"SELECT key_id::text, person_id, case_id FROM {KEYSTORE}.data_keys WHERE key_id = ANY($1::uuid[])", ids
    )
    return {r["key_id"]: (r["person_id"], r["case_id"]) for r in rows}


def _is_uuid(text: str) -> bool:
    import uuid

    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def select_personal_data(
    parsed: Sequence[Parsed],
    person_id: str,
    *,
    owners: dict[str, tuple[str, str]],
    keys: KeyCache | None,
    erased_cases: set[str],
    roles: dict[str, str],
) -> list[ExportedCase]:
    """The person's own values in each event (see the module docstring), grouped by case, in order.
    ``keys`` holds the person's keys for the tokens under them, and their cases' own keys (``CASE_PERSON``) and
    monitoring keys (``MONITORING_PERSON``); no one else's."""
    cases: dict[str, ExportedCase] = {}
    for p in parsed:
        case_id = p.record.case_id
        envelope = p.envelope
        cipher = cipher_for(REGISTRY.model(envelope["type"]))
        event = ExportedEvent(
            p.record.topic, p.record.offset, str(envelope.get("id")), envelope["type"], str(envelope.get("time"))
        )
        current: dict[str, Any] = {}
        if cipher.has_personal_data:
            data = envelope["data"]
            # Encrypted values: only under the person's own key on this case.
            pending = cipher.prepare_decrypt(data)
            mine = [s for s in pending.slots if _is_theirs(s, owners, person_id, case_id)]
            under_case = [
                s for s in pending.slots if owners.get(token_key_id(s.container[s.index])) == (CASE_PERSON, case_id)
            ]
            if mine:
                if keys is None:
                    raise RuntimeError("MASTER_KEYS is needed to read this person's encrypted values")
                opened = PendingDecryption(pending.document, mine).open(keys, placeholder=ERASED)
                erased = set(opened.erased)
                for slot in mine:
                    _take(event, current, slot, slot.container[slot.index], slot.path in erased)
            # Values under the case's key: only those that name the person (``_named_under_case_key``).
            if under_case and keys is not None:
                PendingDecryption(pending.document, under_case).open(keys, placeholder=ERASED)
                for slot in _named_under_case_key(under_case, person_id):
                    _take(event, current, slot, slot.container[slot.index], False)
            # Plain values: only those fieldcrypt's ownership rule gives to the person.
            plain = cipher.prepare_encrypt(data, case_id)
            for slot in plain.slots:
                if slot.owner == person_id:
                    gone = case_id in erased_cases
                    _take(event, current, slot, ERASED if gone else slot.container[slot.index], gone)
            if envelope["type"] == "rj.participant.rectified" and data.get("person_id") == person_id:
                if isinstance(data.get("field"), str) and "value" in event.values:
                    current = {data["field"]: event.values["value"]}
        if event.values or event.erased or _names(envelope["data"], person_id):
            case = cases.setdefault(case_id, ExportedCase(case_id, roles.get(case_id), case_id in erased_cases))
            case.events.append(event)
            case.current.update(current)
    return sorted(cases.values(), key=lambda c: c.case_id)


def _named_under_case_key(slots: Sequence[Any], person_id: str) -> list[Any]:
    """Of the opened values under the case's key, those that are the person's: a naming field with their id, an
    actor that is them, and the role in a record a naming field there gives to them. Anyone else's (staff who
    recorded it, another participant) stays out."""
    named = {id(s.container) for s in slots if s.field in _NAMING_FIELDS and s.container[s.index] == person_id}
    theirs = []
    for slot in slots:
        value = slot.container[slot.index]
        if slot.field in _NAMING_FIELDS and value == person_id:
            theirs.append(slot)
        elif isinstance(value, dict) and value.get("id") == person_id and value.get("kind") == "participant":
            theirs.append(slot)
        elif slot.field == "role" and id(slot.container) in named:
            theirs.append(slot)
    return theirs


def _is_theirs(slot: Any, owners: dict[str, tuple[str, str]], person_id: str, case_id: str) -> bool:
    """Whether an encrypted value is the person's: under their key on the case, or under the case's monitoring key
    in an object whose plain ``person_id`` is theirs."""
    owner = owners.get(token_key_id(slot.container[slot.index]))
    if owner == (person_id, case_id):
        return True
    about = slot.container.get("person_id") if isinstance(slot.container, dict) else None
    return owner == (MONITORING_PERSON, case_id) and about == person_id


def _take(event: ExportedEvent, current: dict[str, Any], slot: Any, value: Any, erased: bool) -> None:
    path = _path(slot.path)
    event.values[path] = value
    if erased:
        event.erased.append(path)
    container = slot.container
    if slot.field in RECTIFIABLE and isinstance(container, dict) and isinstance(container.get("person_id"), str):
        current[slot.field] = value


async def export_person(settings: Settings, conn: asyncpg.Connection, person_id: str) -> dict[str, Any]:
    """Everything held on ``person_id``, as a JSON document (see the module docstring)."""
    roles = await store.roles_of(conn, person_id)
    case_ids = set(roles) | await store.cases_of(conn, person_id)
    erased_cases = await store.erased_cases_of(conn, person_id)
    parsed = parse_records(await read_case_facts(settings, case_ids))
    owners = await key_owners(conn, token_key_ids(parsed))
    # Their own keys, and their cases' own keys (who declined or withdrew, sealed under the case's key) and
    # monitoring keys (their monitoring data, a later offence's date and outcome).
    whose = (person_id, CASE_PERSON, MONITORING_PERSON)
    mine = [key_id for key_id, owner in owners.items() if owner[0] in whose and owner[1] in case_ids]
    keys = None
    if mine:
        keys = KeyCache(KeyStore.from_settings(settings))
        await keys.load(conn, key_ids=mine)
    cases = select_personal_data(parsed, person_id, owners=owners, keys=keys, erased_cases=erased_cases, roles=roles)
    held = {c.case_id for c in cases}
    for case_id in sorted(case_ids - held):  # a case we hold them on whose facts say nothing of theirs
        cases.append(ExportedCase(case_id, roles.get(case_id), case_id in erased_cases))
    return {
        "person_id": person_id,
        "exported_at": datetime.now().astimezone().isoformat(),
        "cases": [c.as_json() for c in sorted(cases, key=lambda c: c.case_id)],
    }
