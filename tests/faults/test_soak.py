"""The soak (issue 21): the whole system at once, under load and faults, loses nothing, repeats nothing and leaks
nothing.

Every service runs (referral, consent, scheduling, notify with a real SMTP server, privacy, audit, the API). Upstream
publishes a realistic mix for ``CRIMES`` crimes from two forces (``tests.support.soak_traffic``); staff and
participants work cases over HTTP alone (``tests.support.soak_driver``); a relay's re-sends are played by sending a
tenth of the commands again, same ids; and meanwhile services are SIGKILLed and restarted at random moments (each
of referral, consent, scheduling, notify, the API, privacy, audit, and the relay processes of the API and consent),
and the database turns read-only for a few seconds. Then, once everything has settled, the promises of
ARCHITECTURE.md are checked across the whole system (``tests.support.soak_checks``), each failure named; among
them, every case folded from the audit log alone equals the case page the API shows its force's coordinator.

The size is ``CRIMES`` (70: about a minute alone); ``RJ_SOAK_CRIMES=2000`` runs a bigger one by hand. What is random
is seeded; only the moments at which faults land depend on the machine, and nothing asserted depends on them.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from demo import samples
from demo.samples import facilitators, prepare
from schemas import topics
from services.audit import replay
from services.notify.channels.reference import References
from services.runtime import privacy
from services.runtime.kafka import publish_raw
from tests.e2e.conftest import facilitators_known
from tests.e2e.test_audit_e2e import audit_caught_up
from tests.faults.test_privacy_at_rest import leaks, table_bytes
from tests.harness import System
from tests.support.smtp import ALWAYS_OPEN, Inbox, smtp_server
from tests.support.soak_checks import (
    Topics,
    after_the_stop,
    bookings_without_consent,
    cases_not_made,
    delivered,
    not_dead_lettered,
    reached_after_withdrawal,
    repeated_decisions,
    stops_in_force,
    told_twice,
    unknown_messages,
)
from tests.support.soak_driver import Driver
from tests.support.soak_traffic import FORCE_A, FORCE_B, Crime, Marker, generate

pytestmark = pytest.mark.integration

CRIMES = int(os.environ.get("RJ_SOAK_CRIMES", "70"))
"""The soak's size: crimes upstream reports (about 2.8 records each). Raise it with ``RJ_SOAK_CRIMES`` by hand."""
DRIVEN = 0.4
"""The share of accepted cases staff work through the API (the rest wait in preparation, as many do)."""
SEED = 21
SERVICES = ("referral", "consent", "scheduling", "notify", "privacy", "audit", "api")
FAULTS = (
    "referral", "consent", "scheduling", "notify", "api", "relay:api", "read-only", "privacy", "audit",
    "relay:consent",
)  # fmt: skip
"""Each at least once, in a shuffled order; while staff still work, as many kills again follow at random (no more:
each restart costs a few seconds of CPU, which the rest of the run would wait for)."""
RESENT = 10
"""One command in ``RESENT`` is sent again with its id, as a relay does that crashed between send and mark."""


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    handler = Inbox()
    with smtp_server(handler) as port:
        yield handler, port


class Services:
    """Every service of the system, each with its own settings, started again the same way after each fault."""

    def __init__(self, system: System, settings: dict[str, dict[str, Any]]) -> None:
        self.system = system
        self.settings = settings
        self.exits: Counter[str] = Counter()  # services that ended on their own and were restarted (a relay killed)

    def start(self, name: str) -> None:
        self.system.start(name, **self.settings.get(name, {}))

    def kill(self, name: str) -> None:
        self.system.service(name).kill()

    def kill_relay(self, name: str) -> bool:
        """SIGKILL the service's outbox relay (its child process); the service then ends, as it must."""
        pid = self.system.service(name).process.pid
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return False
        for child in children:
            try:
                if b"relay_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                    os.kill(int(child), signal.SIGKILL)
                    return True
            except (OSError, ProcessLookupError):
                continue
        return False

    def restart_the_dead(self) -> None:
        for name in SERVICES:
            if not self.system.service(name).running:
                self.exits[name] += 1
                self.start(name)


async def cut_connections(admin: asyncpg.Connection, database: str) -> None:
    await admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        database,
    )


async def read_only_for_a_while(system: System, seconds: float) -> None:
    """A failover to a read-only server and back: every connection cut, each way."""
    admin = await asyncpg.connect(system.server_url)
    try:
        await admin.execute(f"ALTER DATABASE {system.database} SET default_transaction_read_only = on")
        await cut_connections(admin, system.database)
        await asyncio.sleep(seconds)
    finally:
        await admin.execute(f"ALTER DATABASE {system.database} RESET default_transaction_read_only")
        await cut_connections(admin, system.database)
        await admin.close()


async def faults(services: Services, rng: random.Random, staff_done: asyncio.Event, done: list[str]) -> None:
    """Every fault of ``FAULTS`` at a random moment, then random kills while staff still work (as many again)."""
    plan = list(FAULTS)
    rng.shuffle(plan)
    extra = len(FAULTS)
    while plan or (extra and not staff_done.is_set()):
        await asyncio.sleep(rng.uniform(2.0, 5.0))
        services.restart_the_dead()
        if plan:
            fault = plan.pop(0)
        else:
            fault, extra = rng.choice(["referral", "consent", "scheduling", "notify", "api"]), extra - 1
        if fault == "read-only":
            await read_only_for_a_while(services.system, rng.uniform(3.0, 5.0))
        elif fault.startswith("relay:"):
            name = fault.removeprefix("relay:")
            if not services.kill_relay(name):
                plan.append(fault)  # not started yet (still migrating): another moment
                continue
            for _ in range(100):  # the service sees its relay gone and ends
                if not services.system.service(name).running:
                    break
                await asyncio.sleep(0.1)
        else:
            services.kill(fault)
            await asyncio.sleep(rng.uniform(0.2, 1.5))
            services.start(fault)
        done.append(fault)
    services.restart_the_dead()


async def resend_some_commands(system: System, stop: asyncio.Event) -> int:
    """Send again, with the same id, one command in ``RESENT`` as it appears on ``rj.commands``: what a relay does
    that crashed between sending and marking it sent. The receivers' inboxes must drop them."""
    reader = await system.reader(topics.COMMANDS)
    seen: set[bytes] = set()
    resent = 0
    while not stop.is_set():
        again = []
        for _, key, value in await reader.read(0.5):
            if value and value not in seen and zlib.crc32(value) % RESENT == 0:
                seen.add(value)
                again.append((topics.COMMANDS, key, value, None))
        if again:
            await asyncio.sleep(random.uniform(0.0, 1.0))  # a while after the first copy
            await publish_raw(system.settings, again)
            resent += len(again)
    return resent


QUIET_S = 10.0
"""How long nothing may move before the system counts as settled."""


async def settled(system: System, services: Services, expected_ids: set[str], malformed: int) -> None:
    """Until every service has taken in everything and nothing moves any more: all upstream events in referral's
    inbox and the malformed ones dead-lettered, every outbox published, nothing notify has due or in flight, no inbox
    growing for ``QUIET_S``, and the audit log holding every record."""
    services.restart_the_dead()

    async def referral_took_everything() -> bool:
        ids = {r["event_id"] for r in await system.fetch("SELECT event_id FROM referral.inbox")}
        letters = await system.fetchval("SELECT count(*) FROM referral.dead_letters")
        return expected_ids <= ids and letters >= malformed

    await system.wait_for(referral_took_everything, timeout_s=180, what="referral to take in every upstream record")

    async def with_table(name: str) -> list[str]:
        sql = "SELECT table_schema FROM information_schema.tables WHERE table_name = $1 AND table_schema <> 'public'"
        return sorted(r["table_schema"] for r in await system.fetch(sql, name))

    inboxes, outboxes = await with_table("inbox"), await with_table("outbox")
    unchanged_since: list[tuple[Any, float]] = []  # the last fingerprint of what the services have taken in, since

    async def quiet() -> bool:
        services.restart_the_dead()
        taken_in = (
            await system.fetchval("SELECT " + " + ".join(f"(SELECT count(*) FROM {s}.inbox)" for s in inboxes)),
            await system.fetchval("SELECT count(*) FROM notify.scheduled_sends"),
            await system.fetchval("SELECT count(*) FROM api.timeline"),
        )
        unpublished = await system.fetchval(
            "SELECT " + " + ".join(f"(SELECT count(*) FROM {s}.outbox WHERE published_at IS NULL)" for s in outboxes)
        )
        due = await system.fetchval(
            "SELECT count(*) FROM notify.scheduled_sends WHERE status = 'sending' "
            "OR (status = 'waiting' AND due_at <= now())"
        )
        if not unchanged_since or unchanged_since[0][0] != taken_in or unpublished or due:
            unchanged_since[:] = [(taken_in, time.monotonic())]
            return False
        # Long enough for a service killed just before to be restarted, join its groups and take in what waits
        # for it (about 6 s here): a window shorter than that took a restarting service for a settled one.
        return time.monotonic() - unchanged_since[0][1] >= QUIET_S

    await system.wait_for(quiet, timeout_s=240, what="every service to settle")
    await audit_caught_up(system, timeout_s=120)


async def held_of(system: System, case_ids: set[str]) -> str:
    """Per case named in a failure: what each service parked or dead-lettered of it, and how many of its events each
    took in, so that a failure says where the case stopped."""
    lines = []
    for case_id in sorted(case_ids)[:5]:
        for schema in ("consent", "scheduling", "notify"):
            parked = await system.fetch(
                f"SELECT source_topic, reason FROM {schema}.parked WHERE case_key = $1", case_id
            )
            dead = await system.fetch(
                f"SELECT source_topic, reason FROM {schema}.dead_letters WHERE key = $1", case_id.encode()
            )
            lines.append(f"{case_id} {schema}: parked {[tuple(r) for r in parked]}, dead {[tuple(r) for r in dead]}")
    return "\n".join(lines)


async def answers(system: System) -> bool:
    """The API answers (its OpenAPI document), whatever else it is doing."""
    try:
        async with httpx.AsyncClient(base_url=system.api_url, timeout=2) as client:
            return (await client.get("/openapi.json")).status_code == 200
    except httpx.HTTPError:
        return False


async def cases_listed(driver: Driver, force: str) -> set[str]:
    """Every case the force's coordinator sees in the list, page after page."""
    staff = driver.desks[force].coordinator
    listed: set[str] = set()
    after: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 200, **({"after": after} if after else {})}
        page = await driver.request(staff.client, "GET", "/cases", params=params)
        assert page is not None and page.status_code == 200, page and page.text
        listed |= {c["case_id"] for c in page.json()["cases"]}
        after = page.json()["next_cursor"]
        if not after:
            return listed


async def audit_does_not_verify(system: System) -> list[str]:
    """``rj audit sign-head`` then ``rj audit verify``, as an operator runs them: what went wrong, if anything."""
    code, out, err = await system.cli("audit", "sign-head")
    if code == 0:
        code, out, err = await system.cli("audit", "verify")
    return [] if code == 0 and out.startswith("OK:") else [f"rj audit exited {code}: {out}{err}"]


async def in_clear(system: System, log: Topics, marker: Marker) -> list[str]:
    """Personal data found in clear on any topic we write (upstream's crime.events is theirs, in clear by design) or
    in any table; and, to show that the scan can see a leak, the marker must be found in crime.events."""
    haystacks = {f"topic {t}": blobs for t, blobs in log.bytes.items() if t != topics.CRIME_EVENTS}
    conn = await asyncpg.connect(system.settings.database_url)
    try:
        haystacks |= {f"table {name}": rows for name, rows in (await table_bytes(conn)).items()}
    finally:
        await conn.close()
    found = leaks(haystacks, marker.needles())
    if not leaks({"crime.events": log.bytes[topics.CRIME_EVENTS]}, {"token": marker.token}):
        found.append("the scan cannot see a leak: the marker is not found even in upstream's own crime.events")
    return found


async def replay_differs(system: System, driver: Driver, crimes: list[Crime]) -> list[str]:
    """Every case, folded from the audit log alone (``services.audit.replay``, as ``rj audit replay --reason``
    does), against the case page its force's coordinator gets from the API: where they disagree, field by field."""
    far = datetime.now(UTC) + timedelta(days=3650)
    keys = privacy.Privacy.from_settings(system.settings)  # who withdrew is sealed: opened, as with --reason
    found, compared = [], 0
    conn = await asyncpg.connect(system.settings.database_url)
    try:
        for crime in crimes:
            if not crime.opens_a_case:
                continue
            with privacy.batch_scope(keys):
                facts = await replay.recorded_facts(conn, crime.case_id, open_personal=True)
            state = replay.state_at(crime.case_id, facts, far)
            desk = driver.desks[crime.force]
            page = await driver.request(desk.coordinator.client, "GET", f"/cases/{crime.case_id}")
            if page is None or page.status_code != 200:
                found.append(f"case {crime.case_id}: the API answered {page and page.status_code}")
                continue
            found += [f"case {crime.case_id}: {d}" for d in replay.differences(state, page.json())]
            compared += 1
    finally:
        await conn.close()
    if not compared:
        found.append("no case was compared: the check saw nothing")
    return found


async def cross_force_reads(driver: Driver, crimes: list[Crime]) -> list[str]:
    """Each force's coordinator lists no case of the other force, and is shown none when asking for one by id."""
    crossed = []
    opened = {c.case_id: c.force for c in crimes if c.opens_a_case}
    for force, desk in driver.desks.items():
        listed = await cases_listed(driver, force)
        others = sorted(listed & {case for case, f in opened.items() if f != force})
        crossed += [f"a coordinator of {force} lists case {case} of another force" for case in others]
        if not listed & {case for case, f in opened.items() if f == force}:
            crossed.append(f"a coordinator of {force} lists none of their own force's cases: the check saw nothing")
        other_case = next(case for case, f in opened.items() if f != force)
        shown = await driver.request(desk.coordinator.client, "GET", f"/cases/{other_case}")
        if shown is None or shown.status_code != 404:
            crossed.append(f"a coordinator of {force} asking for case {other_case} of another force got {shown}")
    return crossed


async def test_the_whole_system_under_load_and_faults_loses_nothing_repeats_nothing_and_leaks_nothing(
    system: System, smtp: tuple[Inbox, int], tmp_path: Path
) -> None:
    began = time.monotonic()
    rng = random.Random(SEED)
    mailbox, port = smtp
    marker = Marker()
    traffic = generate(CRIMES, marker, seed=SEED)
    audit = {
        "audit_head_interval_s": 20.0,  # heads signed during the run too, and kills among them
        "audit_signing_key_file": tmp_path / "log-key.pem",
        "audit_witness_file": tmp_path / "witness.jsonl",
    }
    system.settings = system.settings.model_copy(update=audit)  # for ``rj audit`` as an operator runs it
    services = Services(
        system,
        {
            "notify": {
                "notify_smtp_host": "127.0.0.1",
                "notify_smtp_port": port,
                "notify_smtp_tls": "none",
                "notify_from_address": "rj-hub@hub.example",
                "notify_quiet_hours": ALWAYS_OPEN,
                "notify_poll_interval_s": 0.2,
            },
            "audit": audit,
        },
    )
    for name in SERVICES:
        services.start(name)
    await system.wait_for(lambda: answers(system), timeout_s=120, what="the API to answer")
    driver = Driver(system, [FORCE_A, FORCE_B], seed=SEED)
    try:
        await driver.register()
        staff_done, stop_resending = asyncio.Event(), asyncio.Event()
        done: list[str] = []
        chaos = asyncio.create_task(faults(services, rng, staff_done, done))
        resender = asyncio.create_task(resend_some_commands(system, stop_resending))
        malformed_at: list[tuple[str, tuple[str, int, int]]] = []
        malformed = {bad.key: bad.what for bad in traffic.malformed}

        async def upstream() -> None:
            """Upstream publishes as crimes are reported: in bursts, over the first half minute or so."""
            for chunk in traffic.chunks(12):
                landed = await publish_raw(system.settings, [(t, k, v, None) for t, k, v in chunk])  # type: ignore[misc]
                malformed_at.extend(
                    (malformed[k], (s.topic, s.partition, s.offset))
                    for (_, k, _), s in zip(chunk, landed, strict=True)
                    if k in malformed
                )
                await asyncio.sleep(rng.uniform(1.0, 3.0))

        worked = [c for c in traffic.crimes if c.admitted and rng.random() < DRIVEN]
        await asyncio.gather(upstream(), driver.work(worked))
        staff_done.set()
        await chaos
        stop_resending.set()
        resent = await resender
        ran = time.monotonic() - began
        await settled(system, services, traffic.event_ids, len(traffic.malformed))
        settled_in = time.monotonic() - began - ran

        # --- what the system left behind --------------------------------------------------------------------
        log = await Topics.read(system.settings, topics.ALL_TOPICS)
        files = [
            dict(r)
            for r in await system.fetch(
                "SELECT force, crime_reference, status, crime IS NULL AS no_crime, outcome IS NULL AS no_outcome "
                "FROM referral.crime_files"
            )
        ]
        inbox = {r["event_id"] for r in await system.fetch("SELECT event_id FROM referral.inbox")}
        letters = [
            dict(r)
            for r in await system.fetch('SELECT source_topic, partition, "offset", reason FROM referral.dead_letters')
        ]
        for letter in letters:
            letter["source_topic"] = letter["source_topic"].removeprefix(system.settings.topic_prefix)
        sends = [dict(r) for r in await system.fetch("SELECT * FROM notify.scheduled_sends")]
        references = References.from_settings(system.settings)
        mail = delivered(list(mailbox.timed), {references.of(s["notification_id"]): s for s in sends})
        withdrawn = {f.subject for f in log.of(topics.CONSENT, "rj.case.withdrawn")}
        in_force = stops_in_force(withdrawn, sends)

        problems: dict[str, list[str]] = {
            "every well-formed upstream event made its case, once": cases_not_made(
                traffic.crimes, files, inbox, traffic.event_ids, log
            ),
            "every command decided once (the inbox)": repeated_decisions(log),
            "no meeting booked without the current consent of everyone needed": bookings_without_consent(
                traffic.crimes, log
            ),
            "nothing reached a participant after a withdrawal but the closure and stop notices": (
                reached_after_withdrawal(in_force, mail)
            ),
            "no one got a message twice": told_twice(mail) + unknown_messages(mail),
            "every malformed record is a dead letter with a reason": not_dead_lettered(malformed_at, letters, log),
        }

        problems["the audit log verifies"] = await audit_does_not_verify(system)
        problems["no personal data in clear on any topic or table we write"] = await in_clear(system, log, marker)
        problems["no cross-force read"] = await cross_force_reads(driver, traffic.crimes)
        problems["no case's state differs from its audit replay"] = await replay_differs(system, driver, traffic.crimes)

        # --- the soak did what it says --------------------------------------------------------------------
        booked = log.of(topics.SCHEDULING, "rj.meeting.booked")
        late = after_the_stop(in_force, mail)
        figures = {
            "crimes": CRIMES,
            "upstream records": len(traffic.records),
            "cases worked over HTTP": len(worked),
            "meetings booked": len(booked),
            "cases withdrawn or declined": len(withdrawn),
            "emails": len(mail),
            "withdrawn cases whose stop notices went": len(in_force),
            "emails to their participants sent after the stop": dict(Counter(m.send["kind"] for m in late if m.send)),
            "commands resent": resent,
            "repeats answered already handled": sum(
                len(log.of(t, "rj.command.already-handled")) for t in topics.OUTPUT_OF.values()
            ),
            "faults": dict(Counter(done)),
            "restarted after ending on their own": dict(services.exits),
            "driver outcomes": dict(driver.outcomes),
            "ran s": round(ran),
            "settled s": round(settled_in),
        }
        print(f"soak figures: {figures}")  # the run's figures, for whoever reads the output (pytest -s)
        report = "\n".join(
            f"{promise} ({len(found)}):\n  " + "\n  ".join(found[:12]) for promise, found in problems.items() if found
        )
        if report:  # what each service held of the cases named, for whoever reads the failure
            report += "\n\n" + await held_of(system, set(re.findall(r"[0-9a-f]{8}-[0-9a-f-]{27}", report)))
        assert not report, f"{report}\n\nfigures: {figures}"
        assert set(FAULTS) <= set(done), f"faults not all made: {figures}"
        exercised = booked and in_force and mail and figures["repeats answered already handled"]
        assert exercised, f"the soak exercised too little to prove anything: {figures}"
    finally:
        await driver.close()


async def test_with_the_inbox_check_switched_off_the_soaks_check_reports_commands_decided_twice(system: System) -> None:
    """The suite catches a broken guarantee: the consent service runs with its inbox check off (a test-only switch),
    a burst of commands is sent, the consent service is killed in the middle of it, and every command is sent again
    with its id (what a relay does that crashed between send and mark). The soak's check of commands decided once
    must report the repeats; with the inbox on, the soak sends the same kinds of repeats and it reports none."""
    unsafe = system.start("consent", replica="unsafe", rj_test_disable_inbox=1)  # no RJ_TEST_MODE: must not start
    switched_off: dict[str, Any] = {"rj_test_mode": 1, "rj_test_disable_inbox": 1}
    for name in ("referral", "scheduling"):
        system.start(name)
    system.start("consent", **switched_off)
    await system.publish(facilitators("F-RP1", "F-RP2"))
    await facilitators_known(system, "F-RP1", "F-RP2")
    refs = [f"WM/2026/RP{i:03d}" for i in range(12)]
    await system.publish(
        [m for r in refs for m in samples.on_crime_events(samples.crime_recorded(r), samples.outcome_recorded(r))]
    )

    async def in_preparation() -> bool:
        return bool(await system.fetchval("SELECT count(*) FROM consent.cases") == len(refs))

    await system.wait_for(in_preparation, what="consent to take every case into preparation")
    burst = [
        (t, k.encode(), v, None)
        for r in refs
        for t, k, v in prepare(samples.case_of(r), [f"V-{r}", f"O-{r}"], ["F-RP1", "F-RP2"])
    ]
    kinds = {(doc := json.loads(value))["id"]: doc["type"] for _, _, value, _ in burst}
    ids = set(kinds)
    await publish_raw(system.settings, burst)

    async def applied(n: int) -> bool:
        got = await system.fetchval("SELECT count(*) FROM consent.inbox WHERE event_id = ANY($1::text[])", list(ids))
        return bool(got >= n)

    await system.wait_for(lambda: applied(len(ids) // 3), what="consent to apply a third of the burst")
    system.service("consent").kill()  # mid-batch
    system.start("consent", **switched_off)
    await system.wait_for(lambda: applied(len(ids)), timeout_s=90, what="consent to apply the whole burst")
    again = await publish_raw(system.settings, burst)  # every command again, with its id
    ends: dict[tuple[str, int], int] = {}
    for sent in again:
        ends[(sent.topic, sent.partition)] = max(ends.get((sent.topic, sent.partition), 0), sent.offset + 1)

    async def read_the_repeats() -> bool:
        rows = await system.fetch("SELECT topic, partition, next_offset FROM consent.consumer_positions")
        at = {(r["topic"].removeprefix(system.settings.topic_prefix), r["partition"]): r["next_offset"] for r in rows}
        return all(at.get(place, 0) >= end for place, end in ends.items())

    await system.wait_for(read_the_repeats, timeout_s=90, what="consent to read every repeat")
    await asyncio.sleep(2)  # and its relay to publish what it decided on them

    log = await Topics.read(system.settings, [topics.COMMANDS, topics.CONSENT, topics.SCHEDULING, topics.REFERRAL])
    repeats = repeated_decisions(log)
    assert repeats, "with the inbox check off, commands sent twice were decided twice: the check must say so"
    # Exactly the commands whose second decision differs from the first: a consent or an assignment given again
    # is "no change" after it was decided (a preparation meeting recorded again decides the very same fact, which
    # the outbox holds once: only the inbox could tell).
    named = {line.split()[1] for line in repeats}
    assert named == {i for i, kind in kinds.items() if kind in ("rj.consent.give", "rj.facilitator.assign")}, repeats
    assert "inbox_check_disabled_for_a_test" in system.logs("consent")

    async def refused_to_start() -> bool:
        return not unsafe.running

    await system.wait_for(refused_to_start, timeout_s=60, what="consent without RJ_TEST_MODE to refuse the switch")
    assert "RJ_TEST_MODE" in system.logs("consent-unsafe"), system.logs("consent-unsafe")[-2000:]
