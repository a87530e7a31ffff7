"""What the soak (issue 21) holds the whole system to once it has settled, each check a function from what the
system left behind (its topics read from offset zero, its tables, the SMTP server's mailbox) to the sentences
that say what broke, empty when nothing did.

The topics are the ground truth that every service and auditor shares: each event's first copy counts (a relay
that crashed between send and mark sends one again, with the same id), and ``rj.commands`` gives the order in
which each case's commands were sent (one partition per case).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from typing import Any

from schemas import topics
from schemas.registry import COMMAND_OWNER
from services.notify.domain import AFTER_A_STOP, STOP_NOTICES
from services.runtime.settings import Settings
from services.runtime.topicread import read_from_the_start
from tests.support.soak_traffic import Crime

ANSWERS = {
    "rj.command.rejected": "rejected",
    "rj.command.no-change": "unchanged",
    "rj.command.already-handled": "already handled",
}
STOPS = ("rj.consent.withdraw", "rj.consent.decline")
PARTICIPATION = "participation"


@dataclass(frozen=True)
class Fact:
    """One event as it first appeared on a topic."""

    topic: str
    partition: int
    offset: int
    doc: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.doc.get("id"))

    @property
    def type(self) -> str:
        return str(self.doc.get("type"))

    @property
    def subject(self) -> str:
        return str(self.doc.get("subject"))

    @property
    def data(self) -> dict[str, Any]:
        data = self.doc.get("data")
        return data if isinstance(data, dict) else {}

    @property
    def time(self) -> datetime:
        return datetime.fromisoformat(str(self.doc["time"]))

    @property
    def command_id(self) -> str | None:
        """The command this fact answers or decides: named in its payload, else its cause (as the API reads it)."""
        named = self.data.get("command_id") or self.doc.get("causationid")
        return named if isinstance(named, str) else None


class Topics:
    """Every event on the topics read, each once (its first copy), in partition order; and how many copies."""

    def __init__(self) -> None:
        self.facts: dict[str, list[Fact]] = defaultdict(list)
        self.copies: Counter[tuple[str, str]] = Counter()
        self.raw: dict[str, list[tuple[int, int, bytes | None]]] = defaultdict(list)
        self.bytes: dict[str, list[bytes]] = defaultdict(list)  # each record's key, value and headers, for a scan

    @classmethod
    async def read(cls, settings: Settings, names: Sequence[str]) -> Topics:
        read = cls()

        def take(topic: str, partition: int, record: Any) -> None:
            read.raw[topic].append((partition, record.offset, record.value))
            headers = b"".join(v or b"" for _, v in record.headers)
            read.bytes[topic].append((record.key or b"") + (record.value or b"") + headers)
            try:
                doc = json.loads(record.value) if record.value is not None else None
            except ValueError:
                doc = None
            if not isinstance(doc, dict) or "id" not in doc:
                return
            read.copies[(topic, str(doc["id"]))] += 1
            if read.copies[(topic, str(doc["id"]))] == 1:
                read.facts[topic].append(Fact(topic, partition, record.offset, doc))

        await read_from_the_start(settings, names, take)
        for facts in read.facts.values():
            facts.sort(key=lambda f: (f.partition, f.offset))
        return read

    def of(self, topic: str, *types: str) -> list[Fact]:
        return [f for f in self.facts[topic] if f.type in types]


# --- 1. every well-formed upstream event made its case, each once ------------------------------------------------


def cases_not_made(
    crimes: Sequence[Crime],
    files: Iterable[dict[str, Any]],
    inbox_ids: set[str],
    event_ids: set[str],
    log: Topics,
) -> list[str]:
    """Each crime's file in the referral service ends as its events say; every distinct well-formed event is in the
    referral service's inbox; and each case was opened, and screened, exactly once."""
    problems = []
    by_crime = {(f["force"], f["crime_reference"]): f for f in files}
    for crime in crimes:
        found = by_crime.get((crime.force, crime.ref))
        if found is None:
            problems.append(f"{crime.ref} ({crime.force}): no crime file in the referral service")
        elif found["status"] not in crime.expected_status or found["no_crime"] or found["no_outcome"]:
            problems.append(
                f"{crime.ref} ({crime.force}): file is {found['status']} (crime kept: {not found['no_crime']}, outcome "
                f"kept: {not found['no_outcome']}); expected {sorted(crime.expected_status)} with both"
            )
    missing = event_ids - inbox_ids
    if missing:
        problems.append(
            f"{len(missing)} well-formed upstream events never taken in by referral, e.g. {sorted(missing)[:3]}"
        )
    opened = Counter(f.subject for f in log.of(topics.REFERRAL, "rj.case.opened"))
    screened = Counter(f.subject for f in log.of(topics.REFERRAL, "rj.case.accepted", "rj.case.declined"))
    for crime in crimes:
        want = 1 if crime.opens_a_case else 0
        if opened[crime.case_id] != want or screened[crime.case_id] != want:
            problems.append(
                f"{crime.ref}: case {crime.case_id} opened {opened[crime.case_id]} times and screened "
                f"{screened[crime.case_id]} times; expected {want} each"
            )
    return problems


# --- 2. every command decided once -----------------------------------------------------------------------------


def repeated_decisions(log: Topics) -> list[str]:
    """A command sent again with the same id (a relay's re-send after a crash, an upstream repeat) must be decided
    once: its owning service's answers to it are either facts it caused, or one rejection, or one "no change", and
    any number of "already handled". A command with two of those, or two rejections, was decided twice: what the
    inbox is there to prevent."""
    problems = []
    answers: dict[str, Counter[str]] = defaultdict(Counter)
    for service, topic in topics.OUTPUT_OF.items():
        for fact in log.facts[topic]:
            command_id = fact.command_id
            if command_id is None:
                continue
            answers[f"{service}:{command_id}"][ANSWERS.get(fact.type, "decided")] += 1
    for command in log.facts[topics.COMMANDS]:
        owner = COMMAND_OWNER.get(command.type)
        if owner is None or owner not in topics.OUTPUT_OF:
            continue
        got = answers.get(f"{owner}:{command.id}", Counter())
        decisions = [kind for kind in ("decided", "rejected", "unchanged") if got[kind]]
        if len(decisions) > 1 or got["rejected"] > 1 or got["unchanged"] > 1:
            copies = log.copies[(topics.COMMANDS, command.id)]
            problems.append(
                f"{command.type} {command.id} (case {command.subject}, {copies} copies on rj.commands) decided more "
                f"than once by {owner}: {dict(got)}"
            )
    return problems


# --- 3. no meeting booked without the current consent of everyone needed -------------------------------------


def bookings_without_consent(crimes: Sequence[Crime], log: Topics) -> list[str]:
    """For every meeting booked: every required participant had given their consent to take part before it was
    booked; no accepted withdrawal or decline of theirs came before the booking command in the case's order (the
    withdrawal wins, whoever read what first); no accepted hold came before it without a resumption between.
    And a withdrawn case has every meeting it had cancelled, and is closed."""
    problems = []
    people = {c.case_id: set(c.people) for c in crimes}
    commands = {f.id: f for f in log.facts[topics.COMMANDS]}
    by_case: dict[str, list[Fact]] = defaultdict(list)
    for command in log.facts[topics.COMMANDS]:
        by_case[command.subject].append(command)
    decided_by_consent: dict[str, set[str]] = defaultdict(set)  # command id -> the types of consent's facts on it
    for fact in log.facts[topics.CONSENT]:
        if fact.command_id:
            decided_by_consent[fact.command_id].add(fact.type)
    given: dict[tuple[str, str], list[datetime]] = defaultdict(list)
    for fact in log.of(topics.CONSENT, "rj.consent.given"):
        if fact.data.get("purpose") == PARTICIPATION:
            given[(fact.subject, str(fact.data.get("person_id")))].append(fact.time)

    def accepted(command: Fact, *fact_types: str) -> bool:
        return bool(decided_by_consent[command.id] & set(fact_types))

    booked = log.of(topics.SCHEDULING, "rj.meeting.booked")
    for meeting in booked:
        case_id, when = meeting.subject, meeting.time
        required = people.get(case_id)
        if required is None:
            continue
        name = f"meeting {meeting.data.get('meeting_id')} of case {case_id} booked at {when.isoformat()}"
        for person in sorted(required):
            if not any(t < when for t in given[(case_id, person)]):
                problems.append(f"{name}: {person} had not consented to take part")
        booking = commands.get(meeting.command_id or "")
        if booking is None:
            problems.append(f"{name}: its booking command is not on rj.commands")
            continue
        before = [c for c in by_case[case_id] if c.partition == booking.partition and c.offset < booking.offset]
        for command in before:
            stops = command.type in STOPS and command.data.get("purpose", PARTICIPATION) == PARTICIPATION
            if (
                stops
                and command.data.get("person_id") in required
                and accepted(command, "rj.consent.withdrawn", "rj.consent.declined")
            ):
                problems.append(
                    f"{name}: after {command.type} {command.id} of {command.data.get('person_id')} (offset "
                    f"{command.offset}, before the booking's {booking.offset}), which consent accepted"
                )
            if command.type == "rj.case.put-on-hold" and accepted(command, "rj.case.held"):
                resumed = [
                    c
                    for c in before
                    if c.offset > command.offset and c.type == "rj.case.resume" and accepted(c, "rj.case.resumed")
                ]
                if not resumed:
                    problems.append(f"{name}: while on hold (hold {command.id} at offset {command.offset})")

    withdrawn = {f.subject for f in log.of(topics.CONSENT, "rj.case.withdrawn")}
    cancelled = {(f.subject, f.data.get("meeting_id")) for f in log.of(topics.SCHEDULING, "rj.meeting.cancelled")}
    closed = {f.subject for f in log.of(topics.SCHEDULING, "rj.case.closed")}
    for case_id in sorted(withdrawn & set(people)):
        if case_id not in closed:
            problems.append(f"case {case_id} was withdrawn and never closed")
        for meeting in booked:
            if meeting.subject == case_id and (case_id, meeting.data.get("meeting_id")) not in cancelled:
                problems.append(f"case {case_id} was withdrawn and meeting {meeting.data.get('meeting_id')} stands")
    return problems


# --- 4 and 5. what reached people, counted at the SMTP server ------------------------------------------------


@dataclass(frozen=True)
class Delivered:
    """An email the SMTP server accepted, with the notify service's record of it (found by its reference)."""

    received_at: datetime
    address: str
    subject: str
    reference: str
    send: dict[str, Any] | None  # its notify.scheduled_sends row, or None if notify has no such message


def delivered(received: Iterable[tuple[datetime, EmailMessage]], sends: dict[str, dict[str, Any]]) -> list[Delivered]:
    """``sends``: notify's rows by the reference their messages go out with."""
    out = []
    for at, message in received:
        reference = str(message["Message-ID"]).strip("<>").split("@")[0]
        address = message["To"].addresses[0].addr_spec.lower()
        out.append(Delivered(at, address, str(message["Subject"]), reference, sends.get(reference)))
    return out


def unknown_messages(mail: Sequence[Delivered]) -> list[str]:
    return [f"{m.address} got {m.subject!r} that notify has no record of" for m in mail if m.send is None]


def told_twice(mail: Sequence[Delivered]) -> list[str]:
    """Nobody gets the same message twice (one reference, one delivery), and no participant gets two messages with
    the same subject about the same case."""
    problems = []
    for reference, n in Counter(m.reference for m in mail).items():
        if n > 1:
            first = next(m for m in mail if m.reference == reference)
            problems.append(
                f"{first.address} got {first.subject!r} {n} times (one notification, reference {reference})"
            )
    participants = Counter(
        (m.address, m.subject, m.send["case_id"])
        for m in mail
        if m.send is not None and m.send["recipient_kind"] == "participant"
    )
    for (address, subject, case_id), n in participants.items():
        if n > 1:
            problems.append(f"{address} got {subject!r} about case {case_id} {n} times")
    return problems


def stops_in_force(withdrawn: set[str], sends: Iterable[dict[str, Any]]) -> dict[str, datetime]:
    """For each withdrawn case, the moment from which its stop was surely in force in the notify service: the first
    moment a notice of the stop (or the closure) began to go. Each of those was decided in a transaction that
    stopped or closed the case, so it could only start after that transaction committed."""
    stop_kinds = {k.value for k in STOP_NOTICES} | {"facilitator_withdrawal", "closure"}
    in_force: dict[str, datetime] = {}
    for send in sends:
        started = send["send_started_at"]
        if send["case_id"] in withdrawn and send["kind"] in stop_kinds and started is not None:
            in_force[send["case_id"]] = min(started, in_force.get(send["case_id"], started))
    return in_force


def after_the_stop(in_force: dict[str, datetime], mail: Sequence[Delivered]) -> list[Delivered]:
    """What reached a participant of a withdrawn case from a send that began after its stop was in force."""
    return [
        m
        for m in mail
        if m.send is not None
        and m.send["recipient_kind"] == "participant"
        and m.send["case_id"] in in_force
        and m.send["send_started_at"] is not None
        and m.send["send_started_at"] > in_force[m.send["case_id"]]
    ]


def reached_after_withdrawal(in_force: dict[str, datetime], mail: Sequence[Delivered]) -> list[str]:
    """On a withdrawn case nothing reaches a participant but the closure notice and the notices of the stop itself,
    once the stop is in force (``stops_in_force``). A message whose send began before that was on the wire when
    the stop came, and may land after it."""
    allowed = {k.value for k in AFTER_A_STOP}
    return [
        f"{m.address} got {m.send['kind']} ({m.subject!r}) on withdrawn case {m.send['case_id']}: its send began at "
        f"{m.send['send_started_at'].isoformat()}, after the stop was in force "
        f"({in_force[m.send['case_id']].isoformat()})"
        for m in after_the_stop(in_force, mail)
        if m.send is not None and m.send["kind"] not in allowed
    ]


# --- 6. every malformed record a dead letter with a reason ------------------------------------------------------


def not_dead_lettered(
    malformed: Sequence[tuple[str, tuple[str, int, int]]], letters: Iterable[dict[str, Any]], log: Topics
) -> list[str]:
    """``malformed``: what each was and where it landed (logical topic, partition, offset)."""
    problems = []
    kept = {(r["source_topic"], r["partition"], r["offset"]): r for r in letters}
    copies = {}
    for _, _, value in log.raw[topics.DEADLETTER]:
        try:
            letter = json.loads(value or b"")
        except ValueError:
            continue
        copies[(letter.get("source_topic"), letter.get("partition"), letter.get("offset"))] = letter
    for what, place in malformed:
        row = kept.get(place)
        if row is None or not row["reason"].strip():
            problems.append(f"{what} at {place}: no dead letter with a reason (found {row and dict(row)})")
        elif place not in copies or not copies[place].get("reason"):
            problems.append(f"{what} at {place}: dead-lettered, but no copy with its reason on rj.deadletter")
    return problems
