"""The Facilitator API through the real stack: staff act on cases over HTTP alone (every command through the API,
every answer from its read model), with their force's login; who may see what; the view log; participants' links.

Only the upstream crime system publishes on Kafka directly here, as it does in production."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from demo import samples
from services.api import links
from services.api.principal import Role
from tests.e2e.api_client import Staff, registered, start_with_api
from tests.harness import System

pytestmark = pytest.mark.integration

OTHER_FORCE = "urn:police:warwickshire:rms"


async def referred(system: System, coordinator: Staff, ref: str) -> tuple[str, str, str]:
    """Upstream publishes a crime and an admitted outcome; the coordinator finds the case in the list."""
    await system.publish(samples.on_crime_events(samples.crime_recorded(ref), samples.outcome_recorded(ref)))
    case_id = samples.case_of(ref)
    await coordinator.until(case_id, lambda c: c["status"] == "preparation", what=f"{ref} in preparation")
    listed = await coordinator.get("/cases", params={"crime_reference": ref})
    assert listed.status_code == 200, listed.text
    assert [c["case_id"] for c in listed.json()["cases"]] == [case_id]
    return case_id, f"V-{ref}", f"O-{ref}"


async def prepared(facilitator: Staff, case_id: str, people: list[str]) -> None:
    """The facilitator meets each party and records their consent, through the API."""
    now = datetime.now(UTC).isoformat()
    for person in people:
        met = {"person_id": person, "met_at": now, "method": "in_person"}
        assert (await facilitator.do(case_id, "rj.preparation-meeting.record", met))["status"] == "accepted"
        consent = {"person_id": person, "through": "facilitator", "method": "in_person"}
        assert (await facilitator.do(case_id, "rj.consent.give", consent))["status"] == "accepted"
    await facilitator.until(case_id, lambda c: c["status"] == "ready", what="the case ready")


async def booked(facilitator: Staff, case_id: str, lead: str, when: Callable[[], datetime]) -> datetime:
    """Book the conference at ``when()``; the start it was booked for. Scheduling hears the case is ready a moment
    after the read model shows it: the facilitator tries again, at a fresh time, as a UI's user would."""
    reasons = []
    for _ in range(20):
        starts = when()
        booking = {
            "meeting_id": "M1",
            "kind": "conference",
            "starts_at": starts.isoformat(),
            "ends_at": (starts + timedelta(minutes=10)).isoformat(),
            "lead_facilitator_id": lead,
            "co_facilitator_id": "F-CAL",
            "venue_id": "V-HUB",
        }
        outcome = await facilitator.do(case_id, "rj.meeting.book", booking)
        if outcome["status"] == "accepted":
            return starts
        reasons.append(outcome["reason"])
        await asyncio.sleep(0.5)
    raise AssertionError(f"never booked: {reasons}")


async def test_a_facilitator_walks_a_case_from_assignment_to_closure_through_the_api_alone(system: System) -> None:
    await start_with_api(system)
    coordinator = Staff(system, "C-1", Role.coordinator)
    ann = Staff(system, "F-ANN", Role.facilitator)
    ben = Staff(system, "F-BEN", Role.facilitator)
    try:
        await registered(coordinator, "F-ANN", "F-BEN", "F-CAL")
        case_id, victim, offender = await referred(system, coordinator, "WM/2026/700001")

        # Not yet hers: a facilitator sees nothing of a case not assigned to them, and cannot act on it.
        assert (await ann.case(case_id)).status_code == 404
        refused = await ann.send(case_id, "rj.case.add-note", {"text": "hello"})
        assert refused.status_code == 404 and refused.json() == {"error": "not_found", "detail": "no such case"}
        # Nor may she assign herself: that is the coordinator's.
        assigned = await coordinator.do(case_id, "rj.facilitator.assign", {"facilitator_id": "F-ANN"})
        assert assigned["status"] == "accepted", assigned
        assert {f["event_type"] for f in assigned["facts"]} >= {"rj.facilitator.assigned"}
        await coordinator.do(case_id, "rj.facilitator.assign", {"facilitator_id": "F-CAL"})  # her co-facilitator

        page = await ann.until(case_id, lambda c: "F-ANN" in c["facilitator_ids"], what="the assignment")
        names = {p["person_id"]: p["name"] for p in page["participants"]}
        assert names[victim] and names[offender], "the assigned facilitator sees the participants' names"
        assert not page["personal_hidden"]
        assert (await ann.get("/cases")).json()["cases"][0]["case_id"] == case_id

        await prepared(ann, case_id, [victim, offender])
        starts = await booked(ann, case_id, "F-ANN", lambda: samples.soon(4))
        await ann.until(case_id, lambda c: [m["status"] for m in c["meetings"]] == ["booked"], what="the booking")
        while datetime.now(UTC) < starts:
            await ann.until(case_id, lambda c: True, what="time passing", timeout_s=1)
        held = {"meeting_id": "M1", "held_at": datetime.now(UTC).isoformat()}
        assert (await ann.do(case_id, "rj.meeting.record-held", held, retries=5))["status"] == "accepted"
        item = {
            "item_id": "I1",
            "kind": "apology",
            "description": "A letter of apology",
            "owner_id": offender,
            "due_date": (datetime.now(UTC) + timedelta(days=14)).date().isoformat(),
        }
        agreement = {"meeting_id": "M1", "items": [item], "consented_by": [victim, offender]}
        assert (await ann.do(case_id, "rj.agreement.record", agreement))["status"] == "accepted"
        assert (await ann.do(case_id, "rj.agreement-item.complete", {"item_id": "I1"}))["status"] == "accepted"

        closed = await ann.until(case_id, lambda c: c["status"] == "closed", what="the case closed")
        assert closed["agreement_items"][0]["state"] == "completed"
        assert closed["agreement_items"][0]["description"] == "A letter of apology"
        types = [entry["event_type"] for entry in closed["timeline"]]
        for fact in ("rj.case.opened", "rj.facilitator.assigned", "rj.consent.given", "rj.meeting.booked"):
            assert fact in types
        assert types[-1] == "rj.case.closed" or "rj.case.closed" in types

        # Another facilitator of the same force: still nothing, the same answer as for a case that does not exist.
        assert (await ben.case(case_id)).json() == (await ben.case("no-such-case")).json()
        assert (await ben.case(case_id)).status_code == 404
        assert (await ben.get("/cases")).json()["cases"] == []

        # Every page that showed a name is in the view log, in the API's outbox, with who and which fields.
        logged = [
            json.loads(r["value"])
            for r in await system.fetch("SELECT value FROM api.outbox WHERE topic = 'rj.api' ORDER BY id")
        ]
        views = [e["data"] for e in logged if e["type"] == "rj.view.logged"]
        assert {v["viewer_id"] for v in views} == {"C-1", "F-ANN"}, "F-BEN was shown nothing"
        # A page asked for without personal values (a UI polling a status) shows none and logs nothing.
        quiet = (await ann.case(case_id, personal="false")).json()
        assert quiet["personal_hidden"] and all(p["name"] is None for p in quiet["participants"])
        assert await system.fetchval("SELECT count(*) FROM api.outbox WHERE topic = 'rj.api'") == len(logged)
        assert all(v["case_id"] == case_id and v["reason"] is None for v in views)
        assert any(v["viewer_id"] == "F-ANN" and f"participants[{victim}].name" in v["fields"] for v in views)
    finally:
        for staff in (coordinator, ann, ben):
            await staff.close()


async def test_no_role_sees_another_forces_case_and_an_auditor_sees_personal_data_only_with_a_reason(
    system: System,
) -> None:
    await start_with_api(system)
    coordinator = Staff(system, "C-1", Role.coordinator)
    elsewhere = Staff(system, "C-9", Role.coordinator, force=OTHER_FORCE)
    auditor = Staff(system, "A-1", Role.auditor)
    try:
        case_id, victim, _offender = await referred(system, coordinator, "WM/2026/700002")

        # Another force's coordinator: not found, nothing listed, no command taken.
        assert (await elsewhere.case(case_id)).status_code == 404
        assert (await elsewhere.get("/cases")).json()["cases"] == []
        sent = await elsewhere.send(case_id, "rj.facilitator.assign", {"facilitator_id": "F-X"})
        assert sent.status_code == 404

        # The auditor reads the case, but without a reason its personal data is hidden, and nothing is logged.
        hidden = (await auditor.case(case_id)).json()
        assert hidden["personal_hidden"] and hidden["personal_fields"] == []
        assert all(p["name"] is None for p in hidden["participants"])
        # An auditor may not act.
        assert (await auditor.send(case_id, "rj.case.add-note", {"text": "x"})).status_code == 403
        before = await system.fetchval("SELECT count(*) FROM api.outbox WHERE topic = 'rj.api'")

        reason = "Subject access request SAR-2026-118"
        shown = await auditor.get(f"/cases/{case_id}", headers={"X-View-Reason": reason})
        assert shown.status_code == 200, shown.text
        names = {p["person_id"]: p["name"] for p in shown.json()["participants"]}
        assert names[victim]
        rows = await system.fetch("SELECT value FROM api.outbox WHERE topic = 'rj.api' ORDER BY id")
        assert len(rows) == before + 1
        logged = json.loads(rows[-1]["value"])
        assert logged["type"] == "rj.view.logged"
        assert logged["data"]["viewer_id"] == "A-1" and logged["data"]["role"] == "auditor"
        assert logged["data"]["reason"] == reason and f"participants[{victim}].name" in logged["data"]["fields"]

        # A token that is not one: 401, whoever it claims to be.
        forged = await auditor.client.get(
            f"/cases/{case_id}", headers={"Authorization": "Bearer " + system.token("A-1", "auditor")[:-4] + "AAAA"}
        )
        assert forged.status_code == 401 and "WWW-Authenticate" in forged.headers

        # A volunteer facilitator may not close a case; a coordinator may, and is told when it is done (the
        # closure is participant-facing, so no fact names the command: the read model answers it all the same).
        volunteer = Staff(system, "V-1", Role.volunteer)
        await registered(coordinator, "V-1")
        assigned = await coordinator.do(case_id, "rj.facilitator.assign", {"facilitator_id": "V-1"})
        assert assigned["status"] == "accepted", assigned["reason"]
        await volunteer.until(case_id, lambda c: True, what="the volunteer's assignment")
        close = {"closure_reason": "not_suitable", "reason": "The offender has moved abroad"}
        refused = await volunteer.send(case_id, "rj.case.close", close)
        assert refused.status_code == 403 and "volunteer" in refused.json()["detail"]
        await volunteer.close()
        closed = await coordinator.do(case_id, "rj.case.close", close)
        assert closed["status"] == "accepted" and [f["event_type"] for f in closed["facts"]] == ["rj.case.closed"]
        page = await coordinator.until(case_id, lambda c: c["status"] == "closed", what="the case closed")
        assert page["closure_reason"] == "not_suitable"
    finally:
        for staff in (coordinator, elsewhere, auditor):
            await staff.close()


async def test_a_participant_withdraws_through_their_link_and_the_meeting_is_cancelled(system: System) -> None:
    await start_with_api(system)
    coordinator = Staff(system, "C-1", Role.coordinator)
    ann = Staff(system, "F-ANN", Role.facilitator)
    try:
        await registered(coordinator, "F-ANN", "F-CAL")
        case_id, victim, offender = await referred(system, coordinator, "WM/2026/700003")
        for facilitator_id in ("F-ANN", "F-CAL"):
            await coordinator.do(case_id, "rj.facilitator.assign", {"facilitator_id": facilitator_id})
        await ann.until(case_id, lambda c: "F-ANN" in c["facilitator_ids"], what="the assignment")
        await prepared(ann, case_id, [victim, offender])
        await booked(ann, case_id, "F-ANN", samples.next_week)

        made = await ann.post(f"/cases/{case_id}/withdraw-links", json={"person_id": offender})
        assert made.status_code == 200, made.text
        url = made.json()["url"]
        assert case_id not in url and offender not in url, "the link itself says nothing of the case or person"

        async with httpx.AsyncClient(timeout=20) as participant:
            # A mail scanner follows the link first: GET and HEAD show, and withdraw nothing.
            scanner = {"User-Agent": "Mozilla/5.0 (compatible; SafeLinks link checker)"}
            for method in ("GET", "HEAD"):
                seen = await participant.request(method, url, headers=scanner)
                assert seen.status_code == 200
            page = (await participant.get(url)).text
            assert "WM/2026/700003" not in page and offender not in page and victim not in page
            altered = url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB")
            assert (await participant.post(altered)).status_code in (400, 404)
            expired = links.mint_link(
                system.settings,
                case_id=case_id,
                person_id=offender,
                ttl_s=60,
                now=datetime.now(UTC) - timedelta(hours=1),
            )
            assert (await participant.post(expired)).status_code == 410
            withdrawals = (
                "SELECT count(*) FROM api.outbox WHERE topic = 'rj.commands' "
                "AND convert_from(value, 'UTF8') LIKE '%\"rj.consent.withdraw\"%'"
            )
            assert await system.fetchval(withdrawals) == 0

            done = await participant.post(url)
            assert done.status_code == 200, done.text
            again = await participant.post(url)
            assert again.status_code == 410
            assert await system.fetchval(withdrawals) == 1

        page = await ann.until(
            case_id,
            lambda c: [m["status"] for m in c["meetings"]] == ["cancelled"],
            what="the meeting cancelled after the withdrawal",
        )
        assert any(c["decision"] == "withdrawn" and c["person_id"] == offender for c in page["consents"])
    finally:
        for staff in (coordinator, ann):
            await staff.close()
