"""Hostile traffic, driven as an outside client would: hypothesis-generated poison records mixed into good
traffic on every topic the services consume, with the three services running as processes on the real
broker and PostgreSQL.

Every good event must be applied exactly once; every poison record must end as exactly the dead letters
(and command rejections) the contract says, by exactly the services it names; and every service must
still be consuming afterwards.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pydantic_core
import pytest
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from demo import samples
from demo.samples import case_of
from schemas import topics
from schemas.kafka_binding import STRUCTURED_MODE_HEADERS
from schemas.registry import COMMAND_OWNER, REGISTRY
from services.consent.app import CONSUMES as CONSENT_CONSUMES
from services.referral.app import CONSUMES as REFERRAL_CONSUMES
from services.scheduling.domain import CONSUMES as SCHEDULING_CONSUMES
from tests.harness import System

pytestmark = pytest.mark.integration

SERVICES = ("referral", "consent", "scheduling")
READS = {
    "referral": (topics.CRIME_EVENTS, topics.COMMANDS, topics.SCHEDULING, topics.CONSENT),
    "consent": (topics.REFERRAL, topics.SCHEDULING, topics.COMMANDS),
    "scheduling": (topics.REFERRAL, topics.CONSENT, topics.COMMANDS),
}
CONSUMES = {"referral": REFERRAL_CONSUMES, "consent": CONSENT_CONSUMES, "scheduling": SCHEDULING_CONSUMES}
PRODUCED_ON = {  # where a type of ours travels
    **{t: topics.COMMANDS for t in COMMAND_OWNER},
    **{t: topics.CRIME_EVENTS for t in ("crime.recorded", "crime.outcome-recorded", "rj.referral-requested")},
}
POISON_TOPICS = (topics.CRIME_EVENTS, topics.COMMANDS, topics.REFERRAL, topics.CONSENT, topics.SCHEDULING)


@dataclass(frozen=True)
class Poison:
    topic: str
    key: bytes | None
    value: bytes | None
    dead_by: frozenset[str]  # services that must dead-letter it
    rejected_by: frozenset[str] = field(default=frozenset())  # services that must answer its sender
    command_id: str | None = None


def envelope(event_type: str, data: Any, *, dataschema: str | None = None, **extra: Any) -> dict[str, Any]:
    document = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "urn:hostile",
        "type": event_type,
        "subject": f"case-{uuid.uuid4().hex[:8]}",
        "time": datetime.now(UTC).isoformat(),
        "data": data,
        **extra,
    }
    if dataschema:
        document["dataschema"] = dataschema
    return document


def readable_type(value: bytes | None) -> bool:
    try:
        document = pydantic_core.from_json(value or b"")
    except ValueError:
        return False
    return isinstance(document, dict) and isinstance(document.get("type"), str)


keys = st.one_of(st.none(), st.binary(max_size=40), st.text(max_size=40).map(str.encode))

unreadable_values = st.one_of(
    st.none(),  # a tombstone
    st.binary(max_size=300).filter(lambda v: not readable_type(v)),
    st.integers(1, 5000).map(lambda n: b'{"type": ' + b"[" * n + b"]" * n + b"}"),  # nested garbage
    st.builds(
        lambda t: b'{"specversion": "1.0", "type": "rj.consent.gi\xff' + t + b'", "id": "1"}', st.binary(max_size=8)
    ),
    st.builds(
        lambda v: json.dumps({"specversion": "1.0", "type": v}).encode(),
        st.integers() | st.none() | st.lists(st.text()),
    ),
)


@st.composite
def unreadable(draw: st.DrawFn, on: tuple[str, ...] = POISON_TOPICS) -> Poison:
    topic = draw(st.sampled_from(on))
    key, value = draw(keys), draw(unreadable_values)
    if value is None and key is None:
        key = b"tombstone"  # Kafka has no record with neither
    return Poison(topic, key, value, frozenset({topics.STEWARD_OF[topic]}))


@st.composite
def unknown_type(draw: st.DrawFn, on: tuple[str, ...] = POISON_TOPICS) -> Poison:
    event_type = draw(st.from_regex(r"[a-z]{2,8}\.[a-z-]{1,20}(\.[a-z-]{1,12})?", fullmatch=True))
    if event_type in REGISTRY:
        event_type = f"{event_type}.unheard-of"
    topic = draw(st.sampled_from(on))
    document = envelope(event_type, draw(st.dictionaries(st.text(max_size=10), st.integers(), max_size=3)))
    steward = topics.STEWARD_OF[topic]
    if topic == topics.COMMANDS:  # answered, so the sender sees it: no dead letter
        return Poison(
            topic, draw(keys), json.dumps(document).encode(), frozenset(), frozenset({steward}), document["id"]
        )
    return Poison(topic, draw(keys), json.dumps(document).encode(), frozenset({steward}))


garbage_data = st.one_of(
    st.integers(),
    st.text(max_size=50),
    st.lists(st.integers(), max_size=5),
    st.none(),
    st.dictionaries(st.sampled_from(["zz", "qq", "x-y"]), st.text(max_size=20), max_size=3),
    st.integers(50_000, 300_000).map(lambda n: "x" * n),  # huge
)


def readers_of(event_type: str, topic: str) -> frozenset[str]:
    return frozenset(s for s in SERVICES if event_type in CONSUMES[s] and topic in READS[s])


@st.composite
def malformed(draw: st.DrawFn) -> Poison:
    """A type some service consumes, with data that no version of it accepts (or a version none knows)."""
    consumed = sorted(set().union(*CONSUMES.values()))
    event_type = draw(st.sampled_from(consumed))
    topic = PRODUCED_ON.get(event_type) or draw(st.sampled_from([topics.REFERRAL, topics.CONSENT, topics.SCHEDULING]))
    if draw(st.booleans()):
        document = envelope(event_type, draw(garbage_data))
    else:  # valid-looking data at a version before any (v0): no upcaster can read it
        document = envelope(event_type, {}, dataschema=f"urn:rj:schema:{event_type}:v0")
    readers = readers_of(event_type, topic)
    owner = COMMAND_OWNER.get(event_type)
    rejected = frozenset({owner}) if owner in readers else frozenset()
    return Poison(topic, draw(keys), json.dumps(document).encode(), readers, rejected, document["id"])


def specific_triggers() -> list[Poison]:
    """The triggers the review found, by name."""
    _, _, register = samples.facilitators("F-EUROPE")[0]
    zoned = json.loads(register)
    zoned["data"]["timezone"] = "Europe"
    nul_ref = samples.upstream_event(samples.crime_recorded("WM/NUL\x00/1"))
    return [
        Poison(
            topics.COMMANDS,
            b"F-EUROPE",
            json.dumps(zoned).encode(),
            frozenset({"scheduling"}),
            frozenset({"scheduling"}),
            zoned["id"],
        ),  # fmt: skip
        Poison(topics.CRIME_EVENTS, b"WM/NUL/1", nul_ref, frozenset({"referral"})),
        Poison(topics.COMMANDS, b"tomb", None, frozenset({"referral"})),
    ]


async def publish_at(
    system: System, messages: list[tuple[str, bytes | None, bytes | None]]
) -> list[tuple[str, int, int]]:
    """Publish, and return where each landed (logical topic, partition, offset)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=system.settings.kafka_bootstrap_servers, acks="all", enable_idempotence=False, linger_ms=2
    )
    await producer.start()
    try:
        futures = [
            await producer.send(system.settings.topic(t), v, key=k, headers=list(STRUCTURED_MODE_HEADERS))
            for t, k, v in messages
        ]
        results = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [(t, r.partition, r.offset) for (t, _, _), r in zip(messages, results, strict=True)]


async def dead_letter_positions(
    system: System, services: tuple[str, ...] = SERVICES
) -> Counter[tuple[str, str, int, int]]:
    found: Counter[tuple[str, str, int, int]] = Counter()
    for service in services:
        rows = await system.fetch(f'SELECT source_topic, partition, "offset", reason FROM {service}.dead_letters')
        for r in rows:
            assert r["reason"], f"{service} dead-lettered {tuple(r)} without a reason"
            found[(service, r["source_topic"], r["partition"], r["offset"])] += 1
    return found


GIVEN = (
    "SELECT key, count(*) AS n FROM consent.outbox "
    "WHERE convert_from(value, 'UTF8')::jsonb->>'type' = 'rj.consent.given' AND key = ANY($1::text[]) GROUP BY key"
)


async def rejections(system: System, services: tuple[str, ...] = SERVICES) -> set[tuple[str, str]]:
    answered = set()
    for service in services:
        rows = await system.fetch(f"SELECT value FROM {service}.outbox WHERE topic = $1", topics.OUTPUT_OF[service])
        for r in rows:
            event = json.loads(r["value"])
            if event["type"] == "rj.command.rejected":
                answered.add((service, event["data"]["command_id"]))
    return answered


poison_lists = st.lists(st.one_of(unreadable(), unknown_type(), malformed()), min_size=15, max_size=30)


@settings(
    max_examples=3,
    deadline=None,
    phases=[Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(poison=poison_lists, order=st.randoms(use_true_random=False))
async def test_poison_on_every_topic_is_dead_lettered_by_the_services_named_and_every_good_event_applied_once(
    system: System, poison: list[Poison], order: Any
) -> None:
    if not system.supervisor or not system.supervisor.processes:
        for name in SERVICES:
            system.start(name)
    poison = [*poison, *specific_triggers()]
    run = uuid.uuid4().hex[:6]
    refs = [f"HX/{run}/{i}" for i in range(8)]
    cases = [case_of(ref) for ref in refs]

    # Good upstream traffic, with poison on every topic mixed in.
    upstream = [
        m for ref in refs for m in samples.on_crime_events(samples.crime_recorded(ref), samples.outcome_recorded(ref))
    ]
    first_half = [(t, k.encode(), v) for t, k, v in upstream] + [(p.topic, p.key, p.value) for p in poison[::2]]
    order.shuffle(first_half)
    positions = await publish_at(system, first_half)

    async def consent_has_every_case() -> bool:
        n = await system.fetchval("SELECT count(*) FROM consent.cases WHERE key = ANY($1::text[])", cases)
        return bool(n == len(cases))

    await system.wait_for(consent_has_every_case, timeout_s=60, what="consent to take every good case")

    # Good commands for those cases, and the other half of the poison, interleaved.
    commands = [samples.consent(case, f"V-{ref}") for case, ref in zip(cases, refs, strict=True)]
    registrations = samples.facilitators(f"F-{run}-1", f"F-{run}-2")
    second_half = [(t, k.encode(), v) for t, k, v in [*commands, *registrations]] + [
        (p.topic, p.key, p.value) for p in poison[1::2]
    ]
    order.shuffle(second_half)
    positions += await publish_at(system, second_half)
    published = [*first_half, *second_half]
    poison_at: list[tuple[Poison, tuple[str, int, int]]] = []
    remaining = list(zip(published, positions, strict=True))
    for p in poison:
        for i, ((t, k, v), pos) in enumerate(remaining):
            if (t, k, v) == (p.topic, p.key, p.value):
                poison_at.append((p, pos))
                del remaining[i]
                break
    good_positions = {pos for _, pos in remaining}
    expected_dead = Counter((s, *pos) for p, pos in poison_at for s in p.dead_by)
    expected_rejections = {(s, p.command_id) for p, _ in poison_at for s in p.rejected_by if p.command_id}

    async def settled() -> bool:
        found = await dead_letter_positions(system)
        ours = Counter({k: n for k, n in found.items() if k in expected_dead or k[1:] in good_positions})
        given = await system.fetch(GIVEN, cases)
        return ours == expected_dead and len(given) == len(cases) and expected_rejections <= await rejections(system)

    try:
        await system.wait_for(settled, timeout_s=90, what="every poison record answered and every good event applied")
    finally:
        found = await dead_letter_positions(system)
        missing = expected_dead - found
        extra = Counter({k: n for k, n in found.items() if k[1:] in good_positions or (k in expected_dead and n > 1)})
        which = [(k, p) for p, pos in poison_at for k in missing if k[1:] == pos][:5]
        assert not missing, f"not dead-lettered as the contract says: {which}"
        assert not extra, f"dead-lettered good events or twice: {extra}"

    # Good events applied exactly once: one case per crime, one consent per command, two registrations.
    accepted = await system.fetchval(
        "SELECT count(*) FROM referral.crime_files WHERE crime_reference = ANY($1::text[]) AND status = 'accepted'",
        refs,
    )
    assert accepted == len(refs)
    given = await system.fetch(GIVEN, cases)
    assert sorted((r["key"], r["n"]) for r in given) == sorted((c, 1) for c in cases)

    async def registered() -> bool:
        n = await system.fetchval(
            "SELECT count(*) FROM scheduling.facilitators WHERE facilitator_id = ANY($1::text[])",
            [f"F-{run}-1", f"F-{run}-2"],
        )
        return bool(n == 2)

    await system.wait_for(registered, what="scheduling to register both facilitators")
    for name in SERVICES:
        assert system.service(name).running, system.logs(name)[-3000:]
