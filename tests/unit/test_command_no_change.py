"""A command its service took and found already so is answered ``rj.command.no-change``, which the API shows as
``unchanged``: no longer ``pending`` for ever, and never mistaken for a fact it caused."""

from __future__ import annotations

from datetime import UTC, datetime

from schemas.commands import CommandNoChange
from schemas.envelope import new_event
from schemas.registry import REGISTRY
from services.api import folding, readmodel
from services.api.commands import CommandOutcome, SentCommand, outcome
from services.api.views import CommandAnswer

NOW = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)


def no_change(command_id: str = "cmd-1") -> CommandNoChange:
    return CommandNoChange(
        case_id="case-1", command_id=command_id, command_type="rj.consent.give", service="consent", answered_at=NOW
    )


def test_a_no_change_answer_is_a_registered_staff_facing_fact_the_read_model_takes_in() -> None:
    assert REGISTRY.model("rj.command.no-change") is CommandNoChange
    assert not CommandNoChange.participant_facing
    assert CommandNoChange.event_type in readmodel.CONSUMES
    assert CommandNoChange in readmodel.ANSWERS_ONLY, "an answer never brings a case into being"
    assert CommandNoChange.event_type in folding.summarised_types()


def test_a_no_change_answer_answers_its_command_as_unchanged_not_accepted() -> None:
    command = new_event(no_change(), source="urn:test", subject="case-1")  # any event: it only gives the chain
    answer = new_event(no_change(), source="urn:rj:service:consent", subject="case-1", cause=command)
    assert folding.answer_of(answer) == folding.CommandAnswer("cmd-1", "unchanged")


class Row:
    def __init__(self, status: str, event_type: str, event_id: str) -> None:
        self.status, self.event_type, self.event_id, self.at = status, event_type, event_id, NOW
        self.reason: str | None = None


def test_the_outcome_of_a_command_that_changed_nothing_is_unchanged() -> None:
    sent = SentCommand("cmd-1", "case-1", "rj.consent.give", "F-1", NOW)
    assert outcome(sent, []).status == "pending"
    unchanged = outcome(sent, [Row("unchanged", "rj.command.no-change", "e1")])
    assert unchanged.status == "unchanged" and [f.event_type for f in unchanged.facts] == ["rj.command.no-change"]
    # Said more plainly than a repeat of its id, and less than a fact or a rejection.
    repeat = Row("already_handled", "rj.command.already-handled", "e2")
    assert outcome(sent, [repeat, Row("unchanged", "rj.command.no-change", "e1")]).status == "unchanged"
    assert outcome(sent, [Row("unchanged", "x", "e1"), Row("accepted", "y", "e3")]).status == "accepted"
    assert outcome(sent, [Row("unchanged", "x", "e1"), Row("rejected", "z", "e4")]).status == "rejected"


def test_the_api_documents_unchanged_as_a_status() -> None:
    assert "unchanged" in CommandOutcome.model_json_schema()["properties"]["status"]["enum"]
    assert "unchanged" in CommandAnswer.model_json_schema()["properties"]["status"]["enum"]
