"""A command that changes nothing, sent through the API, is answered ``unchanged``: consent given again, the same
facilitator assigned again, a withdrawal repeated. Before, the owning service emitted nothing for it, so its outcome
stayed ``pending`` for ever and a UI could not tell "nothing to do" from "the services are behind"."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.api.principal import Role
from tests.e2e.api_client import Staff, registered, start_with_api
from tests.e2e.test_api_facilitator import referred
from tests.harness import System

pytestmark = pytest.mark.integration


async def test_a_repeated_command_is_answered_unchanged_and_the_first_accepted(system: System) -> None:
    await start_with_api(system)
    coordinator = Staff(system, "C-1", Role.coordinator)
    ann = Staff(system, "F-ANN", Role.facilitator)
    try:
        await registered(coordinator, "F-ANN")
        case_id, victim, offender = await referred(system, coordinator, "WM/2026/700101")

        assign = {"facilitator_id": "F-ANN"}
        assert (await coordinator.do(case_id, "rj.facilitator.assign", assign))["status"] == "accepted"
        again = await coordinator.do(case_id, "rj.facilitator.assign", assign)
        assert again["status"] == "unchanged", again
        assert [f["event_type"] for f in again["facts"]] == ["rj.command.no-change"] and again["reason"] is None

        await ann.until(case_id, lambda c: "F-ANN" in c["facilitator_ids"], what="the assignment")
        met = {"person_id": victim, "met_at": datetime.now(UTC).isoformat(), "method": "in_person"}
        assert (await ann.do(case_id, "rj.preparation-meeting.record", met))["status"] == "accepted"
        consent = {"person_id": victim, "through": "facilitator", "method": "in_person"}
        given = await ann.do(case_id, "rj.consent.give", consent)
        assert given["status"] == "accepted" and "rj.consent.given" in [f["event_type"] for f in given["facts"]]
        given_again = await ann.do(case_id, "rj.consent.give", consent)
        assert given_again["status"] == "unchanged", given_again
        assert [f["event_type"] for f in given_again["facts"]] == ["rj.command.no-change"]

        withdrawal = {"person_id": offender, "through": "facilitator", "method": "phone"}
        assert (await ann.do(case_id, "rj.consent.withdraw", withdrawal))["status"] == "accepted"
        withdrawn_again = await ann.do(case_id, "rj.consent.withdraw", withdrawal)
        assert withdrawn_again["status"] == "unchanged", withdrawn_again
        assert [f["event_type"] for f in withdrawn_again["facts"]] == ["rj.command.no-change"]
    finally:
        for staff in (coordinator, ann):
            await staff.close()
