"""Replay's fold, pure: a case's facts (as the audit log records them) give its state at any moment and a timeline
that says who, when and why; commands are shown but change nothing; sealed values stay sealed; late facts never
drag a state back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from schemas import topics
from schemas.api import ViewLogged
from schemas.envelope import CloudEvent, new_event
from services.audit import replay
from services.audit.replay import RecordedFact, fact_from_event, state_at, timeline_of
from tests.integration.test_api_read_model_order import FORCE, STAFF, at, case_facts

CASE = "case-replay"


def recorded(events: list[CloudEvent[Any]]) -> list[RecordedFact]:
    return [fact_from_event(i, topics.CONSENT, event) for i, event in enumerate(events)]


def test_the_whole_case_folds_to_its_last_state() -> None:
    state = state_at(CASE, recorded(case_facts(CASE)), at(60))
    assert state.status == "ready"  # a withdrawal of consent alone does not close the case
    assert state.facilitator_ids == ["F-ANN"]
    assert state.roles == {"V-1": "victim", "O-1": "offender"}
    assert state.consents == {"V-1": {"participation": "given"}, "O-1": {"participation": "withdrawn"}}
    assert state.on_hold and state.hold_concern == "Threat reported by Vera"
    assert state.meetings == {"M1": "cancelled"}
    assert state.agreement_items == {"I1": "open"}
    assert state.closure_reason is None


def test_a_middle_moment_folds_only_the_facts_up_to_it() -> None:
    state = state_at(CASE, recorded(case_facts(CASE)), at(10))
    assert state.status == "ready" and state.meetings == {"M1": "booked"}
    assert state.consents == {"V-1": {"participation": "given"}, "O-1": {"participation": "given"}}
    assert not state.on_hold and state.agreement_items == {}
    assert state_at(CASE, recorded(case_facts(CASE)), at(2)).status == "accepted"
    assert state_at(CASE, recorded(case_facts(CASE)), datetime(2000, 1, 1, tzinfo=UTC)).status is None


def test_a_cancellation_recorded_before_its_booking_still_leaves_the_meeting_cancelled() -> None:
    events = case_facts(CASE)
    booked = next(e for e in events if e.type == "rj.meeting.booked")
    cancelled = next(e for e in events if e.type == "rj.meeting.cancelled")
    state = state_at(CASE, recorded([cancelled, booked]), at(60))
    assert state.meetings == {"M1": "cancelled"}


def test_the_timeline_says_who_decided_when_and_why() -> None:
    lines = timeline_of(recorded(case_facts(CASE)))
    assert len(lines) == 15
    accepted = next(line for line in lines if line.type == "rj.case.accepted")
    assert accepted.who == ["decided_by=staff:coord-1"] and accepted.why == ["eligible"] and accepted.at == at(2)
    withdrawal = lines[-1]
    assert withdrawal.who == ["withdrawn_by=participant:O-1"] and withdrawal.why == ["Not ready to face her"]
    assert "case_id" not in withdrawal.details


def test_a_view_of_personal_data_shows_in_the_timeline_with_the_viewer_and_their_reason() -> None:
    viewed = ViewLogged(
        case_id=CASE, viewer_id="aud-1", role="auditor", viewed_at=at(20), fields=["participants[V-1].name"],
        reason="complaint 77", what="case page",
    )  # fmt: skip
    event = new_event(viewed, source="urn:test", subject=CASE, time=at(20), force=FORCE)
    [line] = timeline_of([fact_from_event(0, topics.API, event)])
    assert (line.type, line.who, line.topic) == ("rj.view.logged", ["auditor:aud-1"], "rj.api")
    assert "complaint 77" in line.why and line.details["fields"] == ["participants[V-1].name"]


def test_a_command_shows_in_the_timeline_but_changes_nothing() -> None:
    events = case_facts(CASE)
    withdrawal = events[-1]
    as_command = fact_from_event(99, topics.COMMANDS, withdrawal)
    state = state_at(CASE, [*recorded(events[:-1]), as_command], at(60))
    assert state.consents["O-1"] == {"participation": "given"}
    assert timeline_of([as_command])[0].topic == "rj.commands"


def test_sealed_values_show_as_sealed_and_a_sealed_withdrawer_still_counts() -> None:
    token = "enc:v1:" + "0" * 8 + "-0000-0000-0000-" + "0" * 12 + ":abc"
    withdrawal = fact_from_event(0, topics.CONSENT, case_facts(CASE)[-1])
    data = {**withdrawal.data, "person_id": token, "reason": token}
    hidden = replay._with_sealed_shown(RecordedFact(0, topics.CONSENT, withdrawal.time, withdrawal.type, "e", data))
    assert hidden.data["reason"] == replay.SEALED
    assert state_at(CASE, [hidden], at(60)).consents == {replay.SEALED: {"participation": "withdrawn"}}


def test_a_closure_ends_the_case_and_a_late_fact_does_not_reopen_it() -> None:
    from schemas.scheduling import CaseClosed, ClosureReason

    closed = CaseClosed(case_id=CASE, reason=ClosureReason.withdrawn, closed_at=at(30), closed_by=STAFF)
    event = new_event(closed, source="urn:test", subject=CASE, time=at(30), force=FORCE)
    facts = recorded([*case_facts(CASE)[:3], event, *case_facts(CASE)[3:9]])
    state = state_at(CASE, facts, at(60))
    assert (state.status, state.closure_reason) == ("closed", "withdrawn")


def test_a_time_without_a_zone_is_refused() -> None:
    with pytest.raises(replay.ReplayError, match="with a zone"):
        replay.parse_moment("2030-01-07T09:00:00")
    assert replay.parse_moment("2030-01-07T09:00:00Z") == at(0)
