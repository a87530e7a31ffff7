"""The record of processing (``rj privacy inventory``): every personal field the contract marks (``x-pii``),
where it is stored, which services read it and how long each copy is kept; the input to a force's data
protection impact assessment.

Nothing here is a list of fields kept by hand: the fields come from the contract's marks
(``fieldcrypt.personal_paths``), the topics from ``schemas.topics`` and the registry, the readers from
each service's consumed event types (given by the caller: the runtime imports no service), and how long
each copy is kept from ``kafka.topic_config`` and the settings. Pure: it reads no database and no broker.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from schemas import topics
from schemas.consent import CONSENT_EVENTS
from schemas.envelope import EventData
from schemas.indirect import INDIRECT_EVENTS
from schemas.notify import NOTIFY_EVENTS
from schemas.privacy import PRIVACY_EVENTS
from schemas.referral import REFERRAL_EVENTS
from schemas.registry import COMMAND_OWNER, REGISTRY, Registry
from schemas.scheduling import SCHEDULING_EVENTS
from schemas.upstream import UPSTREAM_EVENTS
from services.runtime.deadletters import DEAD_LETTER_COPY_BYTES
from services.runtime.fieldcrypt import personal_paths
from services.runtime.kafka import topic_config
from services.runtime.keystore import SCHEMA as KEYSTORE
from services.runtime.settings import Settings

DEFAULT_RETENTION_MONTHS = 24
#: How long a case's personal data lives: until its data keys are destroyed, by erasure or by this.
RETENTION_SCHEDULE = (
    f"per the retention schedule (RETENTION_SCHEDULE; default {DEFAULT_RETENTION_MONTHS} months after case closure)"
)

UPSTREAM = "upstream crime systems"
COMMAND_SENDERS = "the API and staff UIs"

#: The facts each service publishes, as the contract groups them (a module per producing service).
FACTS_OF: Mapping[str, tuple[type[EventData], ...]] = {
    "referral": REFERRAL_EVENTS,
    "consent": CONSENT_EVENTS,
    "scheduling": (*SCHEDULING_EVENTS, *INDIRECT_EVENTS),
    "privacy": PRIVACY_EVENTS,
    "notify": NOTIFY_EVENTS,
}

# The setting a topic's retention comes from, where one does (the other rj.* topics are kept for ever).
_RETENTION_SETTING = {topics.CRIME_EVENTS: "CRIME_EVENTS_RETENTION_MS", topics.DEADLETTER: "DEADLETTER_RETENTION_MS"}


class UnroutedEventType(LookupError):
    """A type with personal data that travels on no topic this module knows: teach ``_route`` about it."""


@dataclass(frozen=True)
class Place:
    """One copy of personal data: its name, what kind of store it is, and how long that copy is kept."""

    where: str
    what: str
    kept: str


@dataclass(frozen=True)
class PersonalData:
    """The personal fields of one event type, who sends and reads it, and every place it is kept."""

    event_type: str
    model: str
    fields: tuple[str, ...]
    topic: str
    sent_by: str
    read_by: tuple[str, ...]
    stored_in: tuple[Place, ...]
    erased: str


@dataclass(frozen=True)
class Holding:
    """Personal data that is not one event type's: the key store, upstream's topic."""

    name: str
    holds: str
    read_by: tuple[str, ...]
    stored_in: tuple[Place, ...]
    erased: str


@dataclass(frozen=True)
class Inventory:
    event_types: tuple[PersonalData, ...]
    holdings: tuple[Holding, ...]
    retention_schedule: str = RETENTION_SCHEDULE

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    def places(self) -> list[Place]:
        """Every place named, once each: the Kafka topics first."""
        things: tuple[PersonalData | Holding, ...] = (*self.event_types, *self.holdings)
        found = {place.where: place for thing in things for place in thing.stored_in}
        return sorted(found.values(), key=lambda p: (not p.what.startswith("Kafka topic"), p.where))


def record_of_processing(
    settings: Settings, consumed: Mapping[str, frozenset[str]], registry: Registry = REGISTRY
) -> Inventory:
    """The inventory of a deployment with ``settings`` whose services take in ``consumed`` (each service's
    name and the event types it consumes)."""
    places = _Places(settings)
    entries = []
    for event_type, model in sorted(registry.models.items()):
        fields = personal_paths(model)
        if not fields:
            continue
        topic, sent_by, outbox_of = _route(event_type)
        readers = tuple(sorted(service for service, types in consumed.items() if event_type in types))
        stored = [places.topic(topic), *([places.outbox(outbox_of)] if outbox_of else []), *places.kept_by(readers)]
        entries.append(
            PersonalData(
                event_type=event_type,
                model=f"{model.__module__}.{model.__qualname__}",
                fields=tuple(fields),
                topic=topic,
                sent_by=sent_by,
                read_by=readers,
                stored_in=tuple(stored),
                erased=f"encrypted under the data key of its person (or of the case) on the case, which is "
                f"destroyed by erasure or {RETENTION_SCHEDULE}",
            )
        )
    services = tuple(sorted(consumed))
    upstream_types = sorted(model.event_type for model in UPSTREAM_EVENTS)
    upstream_readers = tuple(sorted(s for s, types in consumed.items() if types & set(upstream_types)))
    key_store = Holding(
        name="the key store",
        holds="data keys per person per case and per time bucket, with those ids, wrapped by a master key "
        "(MASTER_KEYS or MASTER_KEY_FILE, never in the database)",
        read_by=(*services, "rj privacy"),
        stored_in=(places.key_store(),),
        erased="destroying a key leaves everything encrypted under it unreadable, wherever its copies are",
    )
    crime_events = Holding(
        name=f"upstream's topic {topics.CRIME_EVENTS}",
        holds=f"what {UPSTREAM} publish ({', '.join(upstream_types)}); the topic is upstream's, we keep "
        f"copies only in {', '.join(upstream_readers)} state and dead letters",
        read_by=upstream_readers,
        stored_in=(places.topic(topics.CRIME_EVENTS), *places.kept_by(upstream_readers, parked=False)),
        erased=f"our copies: by erasure or {RETENTION_SCHEDULE}; the topic: its retention, which the force sets",
    )
    audit_log = Holding(
        name="the audit log",
        holds="every record of every topic, once, as it was published: personal fields sealed as on the topic, "
        f"{topics.CRIME_EVENTS} records sealed whole under the key of their day (the tree commits to their SHA-256)",
        read_by=("audit", "rj audit"),
        stored_in=(Place("audit.entries", "PostgreSQL schema audit: the log, insert-only", "for ever"),),
        erased="destroying a key leaves the values sealed under it unreadable in the log too; the log keeps "
        "its entries (and so verifies) for ever",
    )
    letter_queue = Holding(
        name="the letter queue",
        holds="letters rendered for a caseworker to print (the recipient's name and postal address, and the "
        "message), the PDF and HTML sealed under the recipient's data key on the case",
        read_by=("notify", "rj notify letters"),
        stored_in=(Place("notify.letters", "PostgreSQL schema notify: letters to print", RETENTION_SCHEDULE),),
        erased="destroying the person's key on the case shreds their letters, printed or not; a letter is also "
        "taken back unprinted when the case stops",
    )
    return Inventory(tuple(entries), (key_store, crime_events, audit_log, letter_queue))


def _route(event_type: str) -> tuple[str, str, str | None]:
    """The topic a type travels on, who sends it, and the service whose outbox holds it (None: no outbox)."""
    if event_type in {model.event_type for model in UPSTREAM_EVENTS}:
        return topics.CRIME_EVENTS, UPSTREAM, None
    if event_type in COMMAND_OWNER:
        return topics.COMMANDS, COMMAND_SENDERS, None
    for service, facts in FACTS_OF.items():
        if event_type in {model.event_type for model in facts}:
            return topics.OUTPUT_OF[service], service, service
    raise UnroutedEventType(f"{event_type} has personal data and no known topic: add its route to the inventory")


class _Places:
    """Every kind of place personal data is kept, with how long, from the settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def topic(self, topic: str) -> Place:
        retention_ms = int(topic_config(self.settings, topic)["retention.ms"])
        if retention_ms < 0:
            kept = "for ever (retention.ms=-1): the log auditors replay"
        else:
            kept = f"{duration(retention_ms / 1000)} ({_RETENTION_SETTING.get(topic, 'retention.ms')}={retention_ms})"
        if topic == topics.DEADLETTER:
            copy = f"the first {DEAD_LETTER_COPY_BYTES // 1024} KiB of each dead letter, pointing at its row"
            return Place(topic, f"Kafka topic: {copy}", kept)
        return Place(topic, "Kafka topic", kept)

    def outbox(self, service: str) -> Place:
        return Place(
            f"{service}.outbox",
            "PostgreSQL table: events written with the state, until the relay publishes them",
            f"{duration(self.settings.retention_window_s)} after it is published (RETENTION_WINDOW_S); a row not "
            "yet published, or parked as unpublishable, until it is",
        )

    def kept_by(self, readers: tuple[str, ...], *, parked: bool = True) -> list[Place]:
        """The copies the services reading an event keep: their state, what waits, what failed."""
        places = [
            Place(f"{r} state", f"PostgreSQL schema {r}: the service's own tables", "not deleted") for r in readers
        ]
        if parked:
            places += [
                Place(
                    f"{r}.parked",
                    "PostgreSQL table: an event newer than the service knows, and its case's later events",
                    "until applied, after the service is upgraded",
                )
                for r in readers
            ]
        places += [
            Place(
                f"{r}.dead_letters",
                "PostgreSQL table: records the service could not process, whole",
                "not pruned by housekeeping",
            )
            for r in readers
        ]
        return places + ([self.topic(topics.DEADLETTER)] if readers else [])

    def key_store(self) -> Place:
        return Place(
            f"{KEYSTORE}.data_keys, {KEYSTORE}.bucket_keys",
            f"PostgreSQL schema {KEYSTORE}",
            f"a data key until erasure or {RETENTION_SCHEDULE}; a bucket key until its bucket ages out; a destroyed "
            "key's row stays, without the key, saying who destroyed it, when and why",
        )


def duration(seconds: float) -> str:
    """``seconds`` for people, in the largest whole unit (``30 days``, ``36 hours``, ``90 s``)."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds:g} s"


Row = tuple[str, str, str]


def table_rows(inventory: Inventory) -> list[Row]:
    """What is where, for people: (personal data, stored in, read by), a row per event type and holding."""
    rows = [
        (
            "\n".join((e.event_type, *(f"  {f.removeprefix('$.')}" for f in e.fields))),
            "\n".join(p.where for p in e.stored_in),
            "\n".join(e.read_by) or "no service",
        )
        for e in inventory.event_types
    ]
    rows += [
        (f"{h.name}:\n{h.holds}", "\n".join(p.where for p in h.stored_in), "\n".join(h.read_by))
        for h in inventory.holdings
    ]
    return rows
