"""The view log in a case's timeline, for auditors only: staff read a case over HTTP, each read that shows personal
data is logged on rj.api, the api service folds those facts back into the case's timeline, and an auditor's case
page shows who viewed what and when; a facilitator's and a coordinator's never do. Real broker, real PostgreSQL,
the running services; staff act over HTTP alone."""

from __future__ import annotations

from typing import Any

import pytest

from services.api.principal import Role
from tests.e2e.api_client import Staff, registered, start_with_api
from tests.e2e.test_api_facilitator import referred
from tests.harness import System

pytestmark = pytest.mark.integration

VIEW_LOGGED = "rj.view.logged"


def views_of(page: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The view log's entries of a case page's timeline, by who viewed."""
    return {entry["details"]["viewer_id"]: entry for entry in page["timeline"] if entry["event_type"] == VIEW_LOGGED}


async def test_an_auditor_sees_who_viewed_the_case_and_when_and_a_facilitator_and_a_coordinator_never_do(
    system: System,
) -> None:
    system.start("scheduling")
    await start_with_api(system)
    coordinator = Staff(system, "C-1", Role.coordinator)
    facilitator = Staff(system, "F-ANN", Role.facilitator)
    auditor = Staff(system, "A-1", Role.auditor)
    try:
        await registered(coordinator, "F-ANN")
        case_id, victim, _ = await referred(system, coordinator, "WM/2026/720001")
        assert (await coordinator.do(case_id, "rj.facilitator.assign", {"facilitator_id": "F-ANN"}))["status"] == (
            "accepted"
        )
        await facilitator.until(case_id, lambda c: True, what="the facilitator's assignment")

        # Three reads that show personal data, each logged; the auditor's with the reason they stated.
        for staff, headers in ((facilitator, {}), (coordinator, {}), (auditor, {"X-View-Reason": "complaint 41"})):
            page = await staff.get(f"/cases/{case_id}", headers=headers)
            assert page.status_code == 200 and page.json()["personal_fields"], page.text

        # Without a reason the auditor sees no personal value (and nothing is logged), but does see the view log.
        shown = await auditor.until(
            case_id, lambda c: {"F-ANN", "C-1", "A-1"} <= set(views_of(c)), what="the three views in the timeline"
        )
        assert shown["personal_hidden"]
        viewed = views_of(shown)
        assert viewed["F-ANN"]["actor"] == "staff:F-ANN" and viewed["F-ANN"]["details"]["role"] == "facilitator"
        assert f"participants[{victim}].name" in viewed["F-ANN"]["details"]["fields"]
        assert viewed["F-ANN"]["details"]["what"] == "case page" and viewed["F-ANN"]["details"]["viewed_at"]
        assert viewed["A-1"]["details"]["reason"] == "complaint 41" and "complaint 41" in viewed["A-1"]["summary"]
        assert viewed["C-1"]["summary"].startswith("Coordinator C-1 viewed the case page")
        moments = [viewed[who]["at"] for who in ("F-ANN", "C-1", "A-1")]
        assert moments == sorted(moments)

        # The read model holds the view log; only the auditor's page shows it.
        held = await system.fetchval(
            "SELECT count(*) FROM api.timeline WHERE case_id = $1 AND event_type = $2", case_id, VIEW_LOGGED
        )
        assert held >= 3
        for staff in (facilitator, coordinator):
            for params in ({}, {"personal": "false"}):
                page = (await staff.case(case_id, **params)).json()
                assert views_of(page) == {} and page["timeline"], page["timeline"]

        # Being looked at changes nothing about the case: it does not move up the list.
        updated_at, last_view = await system.fetchval(
            """SELECT ROW(c.updated_at, (SELECT max(at) FROM api.timeline t WHERE t.case_id = c.case_id
                                                                           AND t.event_type = $2))
                 FROM api.cases c WHERE c.case_id = $1""",
            case_id,
            VIEW_LOGGED,
        )
        assert updated_at < last_view
    finally:
        for staff in (coordinator, facilitator, auditor):
            await staff.close()
