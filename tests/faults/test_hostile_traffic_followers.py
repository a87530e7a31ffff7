"""Hostile traffic at every consumer, not just the first three: hypothesis-generated poison records on every topic
(the facts of privacy, notify and the API included), mixed into good traffic, with referral, consent, scheduling,
privacy, notify and the API's read model all running as processes on the real broker and PostgreSQL.

Each poison record must end as exactly the dead letters (and command rejections) the contract says, by exactly the
services it names: what no service can read, by its topic's steward alone; a type a service consumes, with data no
version of it accepts, by every service that reads it there. Every good event is applied once, by every service
that follows it, and every service still consumes afterwards."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from demo import samples
from demo.samples import case_of
from schemas import topics
from schemas.registry import COMMAND_OWNER
from services.api.app import TOPICS_IN as API_READS
from services.api.readmodel import CONSUMES as API_CONSUMES
from services.consent.app import CONSUMES as CONSENT_CONSUMES
from services.notify.app import CONSUMES as NOTIFY_CONSUMES
from services.notify.app import TOPICS_IN as NOTIFY_READS
from services.privacy.app import CONSUMES as PRIVACY_CONSUMES
from services.referral.app import CONSUMES as REFERRAL_CONSUMES
from services.scheduling.domain import CONSUMES as SCHEDULING_CONSUMES
from tests.faults.test_hostile_traffic import (
    GIVEN,
    Poison,
    dead_letter_positions,
    envelope,
    garbage_data,
    keys,
    publish_at,
    rejections,
    unknown_type,
    unreadable,
)
from tests.harness import System

pytestmark = pytest.mark.integration

SERVICES = ("referral", "consent", "scheduling", "privacy", "notify", "api")
READS = {
    "referral": (topics.CRIME_EVENTS, topics.COMMANDS, topics.SCHEDULING, topics.CONSENT),
    "consent": (topics.REFERRAL, topics.SCHEDULING, topics.COMMANDS),
    "scheduling": (topics.REFERRAL, topics.CONSENT, topics.COMMANDS),
    "privacy": (topics.REFERRAL, topics.SCHEDULING, topics.CONSENT, topics.COMMANDS, topics.PRIVACY),
    "notify": tuple(NOTIFY_READS),
    "api": tuple(API_READS),
}
CONSUMES = {
    "referral": REFERRAL_CONSUMES,
    "consent": CONSENT_CONSUMES,
    "scheduling": SCHEDULING_CONSUMES,
    "privacy": PRIVACY_CONSUMES,
    "notify": NOTIFY_CONSUMES,
    "api": API_CONSUMES,
}
FACT_TOPICS = (topics.REFERRAL, topics.CONSENT, topics.SCHEDULING, topics.PRIVACY, topics.NOTIFY, topics.API)
POISON_TOPICS = (topics.CRIME_EVENTS, topics.COMMANDS, *FACT_TOPICS)
UPSTREAM = ("crime.recorded", "crime.outcome-recorded", "rj.referral-requested")


def test_every_topic_read_has_a_steward_that_reads_it() -> None:
    """The premise: a record no service can read is answered for by exactly one service, on every topic."""
    for topic in POISON_TOPICS:
        steward = topics.STEWARD_OF.get(topic)
        assert steward is not None, f"no service answers for unreadable records on {topic}"
        assert topic in READS[steward], f"{topic}'s steward {steward} does not read it"


def readers_of(event_type: str, topic: str) -> frozenset[str]:
    return frozenset(s for s in SERVICES if event_type in CONSUMES[s] and topic in READS[s])


@st.composite
def malformed(draw: st.DrawFn) -> Poison:
    """A type some service consumes (the followers' too), with data no version of it accepts (or a version none
    knows), on the topic it travels on, or, for a fact, on any fact topic."""
    consumed = sorted(set().union(*CONSUMES.values()))
    event_type = draw(st.sampled_from(consumed))
    if event_type in COMMAND_OWNER:
        topic = topics.COMMANDS
    elif event_type in UPSTREAM:
        topic = topics.CRIME_EVENTS
    else:
        topic = draw(st.sampled_from(FACT_TOPICS))
    if draw(st.booleans()):
        document = envelope(event_type, draw(garbage_data))
    else:  # valid-looking data at a version before any (v0): no upcaster can read it
        document = envelope(event_type, {}, dataschema=f"urn:rj:schema:{event_type}:v0")
    readers = readers_of(event_type, topic)
    owner = COMMAND_OWNER.get(event_type)
    rejected = frozenset({owner}) if owner in readers else frozenset()
    return Poison(topic, draw(keys), json.dumps(document).encode(), readers, rejected, document["id"])


def one_for_each_follower() -> list[Poison]:
    """Whatever hypothesis draws, each follower gets a fact it consumes with data no version accepts."""
    chosen = []
    for service in ("privacy", "notify", "api"):
        event_type = min(CONSUMES[service] - set(COMMAND_OWNER) - set(UPSTREAM))
        topic = next(t for t in FACT_TOPICS if t in READS[service])
        document = envelope(event_type, {"hostile": "x" * 70_000})
        chosen.append(Poison(topic, b"follower", json.dumps(document).encode(), readers_of(event_type, topic)))
    return chosen


poison_lists = st.lists(
    st.one_of(unreadable(POISON_TOPICS), unknown_type(POISON_TOPICS), malformed()), min_size=20, max_size=35
)


@settings(
    max_examples=3,
    deadline=None,
    phases=[Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(poison=poison_lists, order=st.randoms(use_true_random=False))
async def test_poison_at_every_consumer_is_dead_lettered_as_the_contract_says_and_every_good_event_applied_once(
    system: System, poison: list[Poison], order: Any
) -> None:
    if not system.supervisor or not system.supervisor.processes:
        for name in SERVICES:
            system.start(name)
    poison = [*poison, *one_for_each_follower()]
    run = uuid.uuid4().hex[:6]
    refs = [f"HF/{run}/{i}" for i in range(6)]
    cases = [case_of(ref) for ref in refs]

    upstream = [
        m for ref in refs for m in samples.on_crime_events(samples.crime_recorded(ref), samples.outcome_recorded(ref))
    ]
    first_half = [(t, k.encode(), v) for t, k, v in upstream] + [(p.topic, p.key, p.value) for p in poison[::2]]
    order.shuffle(first_half)
    positions = await publish_at(system, first_half)

    async def every_case_followed() -> bool:
        n = await system.fetchval("SELECT count(*) FROM consent.cases WHERE key = ANY($1::text[])", cases)
        m = await system.fetchval("SELECT count(*) FROM notify.cases WHERE key = ANY($1::text[])", cases)
        return bool(n == m == len(cases))

    await system.wait_for(every_case_followed, timeout_s=90, what="consent and notify to take every good case")

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
        found = await dead_letter_positions(system, SERVICES)
        ours = Counter({k: n for k, n in found.items() if k in expected_dead or k[1:] in good_positions})
        given = await system.fetch(GIVEN, cases)
        return (
            ours == expected_dead
            and len(given) == len(cases)
            and expected_rejections <= await rejections(system, SERVICES)
        )

    try:
        await system.wait_for(settled, timeout_s=120, what="every poison record answered and every good event applied")
    finally:
        found = await dead_letter_positions(system, SERVICES)
        missing = expected_dead - found
        extra = Counter({k: n for k, n in found.items() if k[1:] in good_positions or (k in expected_dead and n > 1)})
        which = [(k, p) for p, pos in poison_at for k in missing if k[1:] == pos][:5]
        assert not missing, f"not dead-lettered as the contract says: {which}"
        assert not extra, f"dead-lettered good events or twice: {extra}"

    given = await system.fetch(GIVEN, cases)
    assert sorted((r["key"], r["n"]) for r in given) == sorted((c, 1) for c in cases)

    async def followed() -> bool:
        # The followers took the good facts too: the API's read model shows each case with its consent, and notify
        # and scheduling know both facilitators.
        shown = await system.fetchval("SELECT count(*) FROM api.cases WHERE case_id = ANY($1::text[])", cases)
        consents = await system.fetchval(
            "SELECT count(DISTINCT case_id) FROM api.consents WHERE case_id = ANY($1::text[])", cases
        )
        facilitators = [f"F-{run}-1", f"F-{run}-2"]
        known = await system.fetchval(
            "SELECT count(*) FROM notify.facilitators WHERE facilitator_id = ANY($1::text[])", facilitators
        )
        booked = await system.fetchval(
            "SELECT count(*) FROM scheduling.facilitators WHERE facilitator_id = ANY($1::text[])", facilitators
        )
        return bool(shown == consents == len(cases) and known == booked == 2)

    await system.wait_for(followed, timeout_s=60, what="the API, notify and scheduling to follow every good fact")
    for name in SERVICES:
        assert system.service(name).running, system.logs(name)[-3000:]
