"""The read model's pure rules: states only move forward, the timeline names no one it must not, and each fact
answers the command that caused it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from schemas.commands import CommandAlreadyHandled, CommandRejected
from schemas.common import Actor
from schemas.consent import ConsentWithdrawn, RecordedThrough, RecordingMethod
from schemas.envelope import new_event
from schemas.registry import REGISTRY
from schemas.scheduling import CaseClosed, ClosureReason
from services.api import folding, readmodel
from services.api.folding import (
    DEADLINE_STATE_RANK,
    INDIRECT_STATE_RANK,
    MEETING_STATUS_RANK,
    case_status_after,
    moves_forward,
)
from services.runtime.fieldcrypt import TOKEN_PREFIX

NOW = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)
STAFF = Actor(kind="staff", id="fac-1")


def test_a_late_acceptance_never_takes_a_closed_case_back() -> None:
    assert case_status_after("closed", "accepted") == "closed"
    assert case_status_after("withdrawn", "ready") == "withdrawn"
    assert case_status_after(None, "preparation") == "preparation"
    assert case_status_after("referred", "ready") == "ready"


def test_a_ready_case_whose_readiness_was_lost_is_back_in_preparation_but_nothing_else_goes_back() -> None:
    assert case_status_after("ready", "preparation", readiness_lost=True) == "preparation"
    assert case_status_after("ready", "preparation") == "ready"
    assert case_status_after("closed", "preparation", readiness_lost=True) == "closed"


@pytest.mark.parametrize(
    ("ranks", "current", "new", "moves"),
    [
        (MEETING_STATUS_RANK, "held", "booked", False),
        (MEETING_STATUS_RANK, "booked", "cancelled", True),
        (MEETING_STATUS_RANK, "booked", "booked", True),  # a reschedule refreshes the plan
        (DEADLINE_STATE_RANK, "met", "breached", False),  # given late, after the overdue flag: still met
        (DEADLINE_STATE_RANK, "breached", "met", True),
        (DEADLINE_STATE_RANK, "met", "due", False),  # the clock's start overtaken by the information given
        (INDIRECT_STATE_RANK, "released", "approved", False),
        (INDIRECT_STATE_RANK, None, "approved", True),  # an approval overtaking the submission still counts
    ],
)
def test_states_only_move_forward(ranks: dict[str, int], current: str | None, new: str, moves: bool) -> None:
    assert moves_forward(ranks, current, new) is moves


def test_the_sql_rank_agrees_with_the_python_rank() -> None:
    sql = folding.rank_sql("m.status", MEETING_STATUS_RANK)
    for state, rank in MEETING_STATUS_RANK.items():
        assert f"WHEN '{state}' THEN {rank}" in sql
    assert sql.endswith("ELSE -1 END)")


def withdrawn(**kw: object) -> ConsentWithdrawn:
    return ConsentWithdrawn(
        case_id="case-1",
        person_id="V-1",
        purpose="participation",
        through=RecordedThrough.participant,
        method=RecordingMethod.online,
        withdrawn_at=NOW,
        withdrawn_by=Actor(kind="participant", id="V-1"),
        recorded_at=NOW,
        reason="I do not want to see him",
        **kw,  # type: ignore[arg-type]
    )


def test_the_timeline_never_says_who_withdrew_or_why() -> None:
    summary = folding.summary_of(withdrawn())
    assert "V-1" not in summary and "see him" not in summary
    assert summary == "Consent to participation withdrawn"


def test_every_case_fact_the_api_reads_has_a_timeline_line_of_its_own() -> None:
    registrations = {model.event_type for model in readmodel.REGISTRATIONS}
    assert readmodel.CONSUMES - registrations <= folding.summarised_types()
    assert all(REGISTRY.model(t) for t in readmodel.CONSUMES)


def test_the_actor_comes_from_a_plain_actor_and_never_from_a_sealed_one() -> None:
    assert folding.actor_of({"closed_by": {"kind": "staff", "id": "fac-1"}}) == "staff:fac-1"
    sealed = {"withdrawn_by": f"{TOKEN_PREFIX}0f0e0d0c-0000-4000-8000-000000000000:abc", "recorded_by": None}
    assert folding.actor_of(sealed) is None


def test_a_fact_answers_the_command_it_names_or_the_one_that_caused_it() -> None:
    command = new_event(withdrawn(), source="urn:test", subject="case-1")
    caused = new_event(withdrawn(command_id="cmd-7"), source="urn:rj:service:consent", subject="case-1")
    assert folding.answer_of(caused) == folding.CommandAnswer("cmd-7", "accepted")
    chained = new_event(withdrawn(), source="urn:rj:service:consent", subject="case-1", cause=command)
    assert folding.answer_of(chained) == folding.CommandAnswer(command.id, "accepted")


def test_a_rejection_answers_with_its_reason_and_a_repeat_as_already_handled() -> None:
    rejected = CommandRejected(
        case_id="case-1", command_id="cmd-1", command_type="rj.case.close", service="scheduling",
        reason="the case is already closed", rejected_at=NOW,
    )  # fmt: skip
    repeat = CommandAlreadyHandled(
        case_id="case-1", command_id="cmd-1", command_type="rj.case.close", service="scheduling",
        first_received_at=NOW, answered_at=NOW,
    )  # fmt: skip
    assert folding.answer_of(new_event(rejected, source="s", subject="case-1")) == folding.CommandAnswer(
        "cmd-1", "rejected", "the case is already closed"
    )
    assert folding.answer_of(new_event(repeat, source="s", subject="case-1")) == folding.CommandAnswer(
        "cmd-1", "already_handled"
    )


def test_a_participant_facing_fact_answers_no_command() -> None:
    closed = CaseClosed(case_id="case-1", reason=ClosureReason.withdrawn, closed_at=NOW, closed_by=STAFF)
    command = new_event(withdrawn(), source="urn:test", subject="case-1")
    assert folding.answer_of(new_event(closed, source="s", subject="case-1", cause=command)) is None


def test_hiding_sealed_values_keeps_the_rest_and_says_where_they_were() -> None:
    token = f"{TOKEN_PREFIX}0f0e0d0c-0000-4000-8000-000000000000:abc"
    shown, paths = folding.hide_sealed(
        {"person_id": "V-1", "reason": token, "items": [{"description": token, "kind": "apology"}]}
    )
    assert shown == {"person_id": "V-1", "reason": None, "items": [{"description": None, "kind": "apology"}]}
    assert paths == ["reason", "items[0].description"]
