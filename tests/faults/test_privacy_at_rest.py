"""No participant's personal data in clear anywhere we write it: a full case run (and hostile records that
become dead letters and parked events), then a scan of the raw bytes of every topic we write and of every
row of every table in the database.

Topics written by others are not ours to seal and are left out of the scan: upstream's ``crime.events``, and
``rj.commands`` as clients publish it today (the API that will publish staff's commands seals them).
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from demo import samples
from demo.samples import case_of
from schemas import topics
from schemas.common import Contact
from schemas.consent import RecordedThrough, RecordingMethod, RecordRiskAssessment, RiskLevel, WithdrawConsent
from schemas.scheduling import RecordAvailability, TimeWindow
from schemas.upstream import Offender, ReferralRequested, Requester
from tests.e2e.conftest import STAFF, command, facilitators, facilitators_known, facts, prepare
from tests.harness import System

pytestmark = pytest.mark.integration

SERVICES = ("referral", "consent", "scheduling")


class People:
    """Participants whose every personal value is distinctive, so that finding one anywhere is a leak."""

    def __init__(self, run: str) -> None:
        self.run = run
        self.victim_name = f"Philippa Quennell-{run}"
        self.victim_email = f"pq.{run}@secret.example"
        self.victim_phone = "+447700987654"
        self.victim_address = f"17 Larkspur Mews {run}"
        self.victim_born = date(1979, 3, 14)
        self.offender_name = f"Bartholomew Ashdown-{run}"
        self.offender_phone = "+447700123987"
        self.offender_address = f"9 Quarry Lane {run}"
        self.offender_born = date(1983, 11, 27)
        self.custody = f"HMP Lindholme-{run}"
        self.notes = f"Ask for Philippa only after six, {run}"
        self.withdrawal = f"Frightened after the letter from Bartholomew, {run}"
        self.risk = f"Bartholomew knows where Philippa works, {run}"
        self.window = ""  # when the victim can attend, set once known (its exact text)
        # Monitoring data (special category): sealed under the case's monitoring key, never in clear either.
        self.victim_gender = f"Gender identity Q-{run}"
        self.victim_ethnicity = f"Ethnicity W9-{run}"
        self.offender_gender = f"Gender identity R-{run}"
        self.offender_ethnicity = f"Ethnicity A7-{run}"

    def needles(self) -> dict[str, str]:
        return {
            name: value
            for name, value in vars(self).items()
            if name != "run" and isinstance(value, str | date) and value != ""
            for value in [value.isoformat() if isinstance(value, date) else value]
        }

    def victim(self, person_id: str) -> Any:
        victim = samples.victim(person_id, born=self.victim_born)
        contact = Contact(email=self.victim_email, phone=self.victim_phone, address=self.victim_address)
        return victim.model_copy(
            update={
                "name": self.victim_name,
                "contact": contact,
                "gender": self.victim_gender,
                "ethnicity": self.victim_ethnicity,
            }
        )

    def offender(self, ref: str) -> Offender:
        return Offender(
            person_id=f"O-{ref}",
            name=self.offender_name,
            date_of_birth=self.offender_born,
            contact=Contact(phone=self.offender_phone, address=self.offender_address),
            in_custody=True,
            custody_location=self.custody,
            gender=self.offender_gender,
            ethnicity=self.offender_ethnicity,
        )


async def read_topic_bytes(system: System, topic: str) -> list[bytes]:
    """Every record of ``topic`` (this run's prefix) as raw bytes: key, value and headers."""
    name = system.settings.topic(topic)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=system.settings.kafka_bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(name, p) for p in consumer.partitions_for_topic(name) or set()]
        if not partitions:
            return []
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        out: list[bytes] = []
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for r in records:
                    out.append(b"".join([r.key or b"", r.value or b"", *(v for _, v in r.headers)]))
        return out
    finally:
        await consumer.stop()


async def table_bytes(conn: asyncpg.Connection) -> dict[str, list[bytes]]:
    """Every row of every table in the database (all schemas of ours), each column as bytes."""
    tables = await conn.fetch(
        """SELECT table_schema, table_name FROM information_schema.tables
            WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')"""
    )
    out: dict[str, list[bytes]] = {}
    for t in tables:
        name = f'"{t["table_schema"]}"."{t["table_name"]}"'
        rows = await conn.fetch(f"SELECT * FROM {name}")
        out[name] = [
            value if isinstance(value, bytes) else str(value).encode() for row in rows for value in row.values()
        ]
    return out


def leaks(haystacks: dict[str, list[bytes]], needles: dict[str, str]) -> list[str]:
    found = []
    for where, blobs in haystacks.items():
        for blob in blobs:
            for what, needle in needles.items():
                if needle.encode() in blob or re.search(re.escape(needle).encode(), blob, re.IGNORECASE):
                    found.append(f"{what} ({needle!r}) in {where}")
    return sorted(set(found))


async def test_rule_3_no_participants_personal_data_is_in_clear_on_any_topic_we_write_or_any_table(
    system: System,
) -> None:
    run = uuid.uuid4().hex[:8]
    people = People(run)
    ref = f"WM/2026/PRIV{run}"
    case_id = case_of(ref)
    victim_id, offender_id = f"V-{ref}", f"O-{ref}"

    for name in SERVICES:
        system.start(name)
    await system.publish(facilitators("F-ANN", "F-BEN"))
    await facilitators_known(system, "F-ANN", "F-BEN")

    crime = samples.crime_recorded(ref, victims=[people.victim(victim_id)])
    outcome = samples.outcome_recorded(ref).model_copy(update={"offender": people.offender(ref)})
    request = ReferralRequested(
        crime_reference=ref,
        requested_by=Requester.victim,
        person_id=victim_id,
        notes=people.notes,
        requested_at=datetime.now(UTC),
    )
    await system.publish(samples.on_crime_events(crime, outcome, request))
    await facts(system, topics.CONSENT, case_id, "rj.preparation.started")
    await system.publish(prepare(case_id, [victim_id, offender_id], ["F-ANN", "F-BEN"]))
    await system.publish(
        [
            command(
                RecordRiskAssessment(
                    case_id=case_id,
                    actor=STAFF,
                    assessed_at=datetime.now(UTC),
                    level=RiskLevel.medium,
                    safe_to_proceed=True,
                    reason=people.risk,
                )
            )
        ]
    )
    await facts(system, topics.CONSENT, case_id, "rj.risk-assessment.recorded")
    await facts(system, topics.CONSENT, case_id, "rj.case.ready-for-meeting")
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    window = TimeWindow(starts_at=tomorrow, ends_at=tomorrow + timedelta(hours=2))
    people.window = window.model_dump(mode="json")["starts_at"]
    await system.publish(
        [command(RecordAvailability(case_id=case_id, actor=STAFF, person_id=victim_id, windows=[window]))]
    )
    await facts(system, topics.SCHEDULING, case_id, "rj.availability.recorded")
    await system.publish(
        [
            command(
                WithdrawConsent(
                    case_id=case_id,
                    actor=STAFF,
                    person_id=victim_id,
                    through=RecordedThrough.facilitator,
                    method=RecordingMethod.in_person,
                    reason=people.withdrawal,
                )
            )
        ]
    )
    await facts(system, topics.SCHEDULING, case_id, "rj.case.closed")

    # Hostile records carrying the same people: one malformed (a dead letter), one from a newer contract
    # (parked until an upgrade). Both must be kept, and kept sealed.
    bad_ref = f"WM/2026/BAD{run}"
    malformed = samples.upstream_event(samples.crime_recorded(bad_ref, victims=[people.victim(f"V-{bad_ref}")]))
    malformed = malformed.replace(b'"reported_at":"', b'"reported_at":"not a time ', 1)
    newer_ref = f"WM/2026/NEW{run}"
    newer = samples.upstream_event(samples.crime_recorded(newer_ref, victims=[people.victim(f"V-{newer_ref}")]))
    newer = newer.replace(b'"subject":', b'"dataschema":"urn:rj:schema:crime.recorded:v99","subject":', 1)
    await system.publish([(topics.CRIME_EVENTS, bad_ref, malformed), (topics.CRIME_EVENTS, newer_ref, newer)])

    async def kept() -> bool:
        letters = await system.fetchval("SELECT count(*) FROM referral.dead_letters WHERE key = $1", bad_ref.encode())
        parked = await system.fetchval("SELECT count(*) FROM referral.parked WHERE case_key = $1", newer_ref)
        return bool(letters and parked)

    await system.wait_for(kept, what="the malformed record dead-lettered and the newer one parked")
    await system.read_until(topics.DEADLETTER, lambda ms: any(m["key_b64"] for m in ms))

    ours = [t for t in topics.ALL_TOPICS if t not in (topics.CRIME_EVENTS, topics.COMMANDS)]
    haystacks = {f"topic {t}": await read_topic_bytes(system, t) for t in ours}
    conn = await asyncpg.connect(system.settings.database_url)
    try:
        haystacks |= {f"table {name}": rows for name, rows in (await table_bytes(conn)).items()}
    finally:
        await conn.close()

    # The scan looks where the data went: the facts and state that carry these people exist, sealed.
    assert any(b"enc:v1:" in blob for blob in haystacks[f"topic {topics.REFERRAL}"])
    assert any(b"enc:v1:" in blob for blob in haystacks['table "referral"."crime_files"'])
    assert haystacks['table "referral"."dead_letters"'] and haystacks['table "referral"."parked"']
    assert leaks(haystacks, people.needles()) == []
    # ...and the scan can see a leak: upstream's own topic holds them in clear.
    upstream = {"topic crime.events": await read_topic_bytes(system, topics.CRIME_EVENTS)}
    assert leaks(upstream, {"victim_name": people.victim_name})
