"""The soak's checks (``tests.support.soak_checks``) can fail: each is shown what a broken system would leave behind
and names what broke, and is shown the legitimate races that look alike and lets them pass. Without this, a soak
that passes could be a soak whose checks see nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from schemas import topics
from tests.support.soak_checks import (
    Delivered,
    Fact,
    Topics,
    bookings_without_consent,
    cases_not_made,
    not_dead_lettered,
    reached_after_withdrawal,
    repeated_decisions,
    stops_in_force,
    told_twice,
)
from tests.support.soak_traffic import FORCE_A, Crime

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
CRIME = Crime(
    index=0, force=FORCE_A, ref="WM/2026/SK00000", admitted=True, requested=False, sensitive=False,
    offender_id="O-WM/2026/SK00000", victim_email="v@example.org", offender_email="o@example.net",
)  # fmt: skip
CASE, VICTIM, OFFENDER = CRIME.case_id, CRIME.victim_id, CRIME.offender_id


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class Log:
    """Facts on topics, written in the order given (offsets count up per topic)."""

    def __init__(self) -> None:
        self.topics = Topics()

    def add(
        self, topic: str, event_type: str, *, id: str, when: float = 0, cause: str | None = None, **data: Any
    ) -> Log:
        offset = len(self.topics.facts[topic])
        doc = {"id": id, "type": event_type, "subject": CASE, "time": at(when).isoformat(), "data": data}
        if cause:
            doc["causationid"] = cause
        self.topics.facts[topic].append(Fact(topic, 0, offset, doc))
        self.topics.copies[(topic, id)] += 1
        return self

    def consented(self, when: float = 0) -> Log:
        for person in (VICTIM, OFFENDER):
            self.add(topics.CONSENT, "rj.consent.given", id=f"given-{person}", when=when, person_id=person,
                     purpose="participation")  # fmt: skip
        return self


def test_a_booking_after_an_accepted_withdrawal_in_the_cases_order_is_named_and_one_before_it_is_not() -> None:
    log = Log().consented(when=1)
    log.add(topics.COMMANDS, "rj.consent.withdraw", id="withdraw", person_id=OFFENDER)
    log.add(topics.COMMANDS, "rj.meeting.book", id="book", meeting_id="M1")
    log.add(topics.CONSENT, "rj.consent.withdrawn", id="withdrawn", when=2, cause="withdraw")
    log.add(topics.SCHEDULING, "rj.meeting.booked", id="booked", when=3, cause="book", meeting_id="M1")
    found = bookings_without_consent([CRIME], log.topics)
    assert any("after rj.consent.withdraw withdraw" in p for p in found), found

    # The other way round: the booking was sent first, the withdrawal after it (consent may well decide the
    # withdrawal before scheduling reads the booking). The booking stands until the withdrawal cancels it.
    log = Log().consented(when=1)
    log.add(topics.COMMANDS, "rj.meeting.book", id="book", meeting_id="M1")
    log.add(topics.COMMANDS, "rj.consent.withdraw", id="withdraw", person_id=OFFENDER)
    log.add(topics.CONSENT, "rj.consent.withdrawn", id="withdrawn", when=2, cause="withdraw")
    log.add(topics.CONSENT, "rj.case.withdrawn", id="case-withdrawn", when=2)
    log.add(topics.SCHEDULING, "rj.meeting.booked", id="booked", when=3, cause="book", meeting_id="M1")
    assert bookings_without_consent([CRIME], log.topics) == [
        f"case {CASE} was withdrawn and never closed",
        f"case {CASE} was withdrawn and meeting M1 stands",
    ]
    log.add(topics.SCHEDULING, "rj.meeting.cancelled", id="cancelled", when=4, meeting_id="M1")
    log.add(topics.SCHEDULING, "rj.case.closed", id="closed", when=4)
    assert bookings_without_consent([CRIME], log.topics) == []


def test_a_booking_without_everyone_s_consent_or_while_on_hold_is_named() -> None:
    log = Log()
    log.add(topics.CONSENT, "rj.consent.given", id="given", when=1, person_id=VICTIM, purpose="participation")
    log.add(topics.COMMANDS, "rj.case.put-on-hold", id="hold")
    log.add(topics.COMMANDS, "rj.meeting.book", id="book", meeting_id="M1")
    log.add(topics.CONSENT, "rj.case.held", id="held", when=2, command_id="hold")
    log.add(topics.SCHEDULING, "rj.meeting.booked", id="booked", when=3, cause="book", meeting_id="M1")
    found = bookings_without_consent([CRIME], log.topics)
    assert any(f"{OFFENDER} had not consented" in p for p in found), found
    assert any("while on hold" in p for p in found), found


def test_a_command_decided_twice_is_named_and_a_repeat_answered_already_handled_is_not() -> None:
    log = Log()
    log.add(topics.COMMANDS, "rj.consent.give", id="give", person_id=VICTIM)
    log.topics.copies[(topics.COMMANDS, "give")] += 1  # sent again, as a relay does after a crash
    log.add(topics.CONSENT, "rj.consent.given", id="given", cause="give", person_id=VICTIM)
    log.add(topics.CONSENT, "rj.command.already-handled", id="repeat", command_id="give")
    assert repeated_decisions(log.topics) == []
    log.add(topics.CONSENT, "rj.command.no-change", id="no-change", command_id="give")  # decided again instead
    [found] = repeated_decisions(log.topics)
    assert found.startswith("rj.consent.give give (case") and "2 copies" in found, found
    assert "'decided': 1" in found and "'unchanged': 1" in found, found


def delivered(kind: str, started: float, *, reference: str = "r1", person: str = "participant") -> Delivered:
    send = {"case_id": CASE, "kind": kind, "recipient_kind": person, "send_started_at": at(started)}
    return Delivered(at(started + 0.1), "v@example.org", kind, reference, send)


def test_a_message_begun_after_the_stop_was_in_force_is_named_and_one_on_the_wire_at_the_stop_is_not() -> None:
    sends = [
        {"case_id": CASE, "kind": "facilitator_withdrawal", "send_started_at": at(10)},
        {"case_id": CASE, "kind": "process_stopped", "send_started_at": at(11)},
    ]
    in_force = stops_in_force({CASE}, sends)
    assert in_force == {CASE: at(10)}
    on_the_wire = delivered("meeting_booked", 9.9, reference="r1")  # lands after the stop, begun before it
    late = delivered("meeting_reminder", 12, reference="r2")
    closure = delivered("closure", 13, reference="r3")
    assert reached_after_withdrawal(in_force, [on_the_wire, closure]) == []
    [found] = reached_after_withdrawal(in_force, [on_the_wire, late, closure])
    assert "got meeting_reminder" in found and f"withdrawn case {CASE}" in found


def test_the_same_message_twice_and_a_participant_told_the_same_thing_twice_are_named() -> None:
    once = delivered("closure", 1, reference="r1")
    assert told_twice([once, delivered("process_stopped", 1, reference="r2")]) == []
    found = told_twice([once, once])
    assert any("2 times (one notification" in p for p in found) and any("about case" in p for p in found), found
    assert told_twice([once, delivered("closure", 2, reference="r9")]) == [
        f"v@example.org got 'closure' about case {CASE} 2 times"
    ]


def test_a_malformed_record_without_a_dead_letter_or_its_copy_is_named() -> None:
    log = Topics()
    place = (topics.CRIME_EVENTS, 1, 7)
    letter = {"source_topic": topics.CRIME_EVENTS, "partition": 1, "offset": 7, "reason": "not JSON: oops"}
    assert not_dead_lettered([("not JSON", place)], [], log) == [
        f"not JSON at {place}: no dead letter with a reason (found None)"
    ]
    [found] = not_dead_lettered([("not JSON", place)], [letter], log)
    assert "no copy with its reason on rj.deadletter" in found
    log.raw[topics.DEADLETTER].append((0, 0, b'{"source_topic": "crime.events", "partition": 1, "offset": 7, '
                                            b'"reason": "not JSON: oops"}'))  # fmt: skip
    assert not_dead_lettered([("not JSON", place)], [letter], log) == []


def test_a_crime_without_its_case_or_with_a_case_opened_twice_is_named() -> None:
    file = {
        "force": FORCE_A,
        "crime_reference": CRIME.ref,
        "status": "accepted",
        "no_crime": False,
        "no_outcome": False,
    }
    log = Log()
    log.add(topics.REFERRAL, "rj.case.opened", id="opened")
    log.add(topics.REFERRAL, "rj.case.accepted", id="accepted")
    assert cases_not_made([CRIME], [file], {"e1"}, {"e1"}, log.topics) == []
    assert cases_not_made([CRIME], [], {"e1"}, {"e1", "e2"}, log.topics) == [
        f"{CRIME.ref} ({FORCE_A}): no crime file in the referral service",
        "1 well-formed upstream events never taken in by referral, e.g. ['e2']",
    ]
    log.add(topics.REFERRAL, "rj.case.opened", id="opened-again")
    [found] = cases_not_made([CRIME], [file], {"e1"}, {"e1"}, log.topics)
    assert "opened 2 times" in found
