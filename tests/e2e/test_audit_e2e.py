"""The audit log through the whole running system: a case run by upstream's crime events and by staff over the
API (assign, consent, a safeguarding hold and its resumption, book, hold the meeting, an agreement, its item
done, closed), every record appended by the audit service as it flows; then the auditor's tools as an operator
runs them (``rj audit replay``, ``sign-head``, ``verify``, ``export``, ``check``, ``rj privacy erase``), each a
process of its own with the system's settings.

What the issue asks: replay gives the state the API shows, at the end and at a moment before the booking; the
log verifies; a case's export checks on its own and holds no participant's personal data in clear; after a
participant is erased the case still verifies and replays, and shows nothing of that person even opened with a
reason."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from demo import samples
from schemas.common import Contact
from services.api.principal import Role
from services.audit import replay
from tests.e2e.api_client import Staff, api_up, registered
from tests.e2e.test_api_facilitator import booked, prepared
from tests.harness import System
from tests.integration.test_audit_log import appended_per_topic, records_on_topics
from tests.integration.test_audit_replay import as_replayed

pytestmark = pytest.mark.integration

REF = "WM/2026/718001"
VICTIM = {"name": "Marigold Quillfeather", "email": "marigold.quillfeather@example.org", "phone": "+447700900987",
          "address": "7 Larkspur Lane"}  # fmt: skip
OFFENDER = {"name": "Barnaby Thistlewood", "phone": "+447700900654"}
REASON = "Audit of complaint C-2026-31"


def upstream(ref: str) -> list[tuple[str, str, bytes]]:
    """A crime and its admitted outcome, naming people whose details are markers to look for."""
    victim = samples.victim(f"V-{ref}").model_copy(
        update={
            "name": VICTIM["name"],
            "contact": Contact(email=VICTIM["email"], phone=VICTIM["phone"], address=VICTIM["address"]),
        }  # fmt: skip
    )
    outcome = samples.outcome_recorded(ref)
    offender = outcome.offender.model_copy(
        update={"name": OFFENDER["name"], "contact": Contact(phone=OFFENDER["phone"])}
    )
    return samples.on_crime_events(
        samples.crime_recorded(ref, victims=[victim]), outcome.model_copy(update={"offender": offender})
    )


async def audit_caught_up(system: System, timeout_s: float = 60) -> None:
    """Every record on every topic appended (the log may be ahead of the broker's end offsets, never behind)."""

    async def caught_up() -> bool:
        on_topics = await records_on_topics(system)
        appended = await appended_per_topic(system)
        return all(appended.get(where, 0) >= end for where, end in on_topics.items())

    await system.wait_for(caught_up, timeout_s=timeout_s, what="the audit log to hold every record")


async def replayed(system: System, case_id: str, *args: str) -> dict[str, Any]:
    code, out, err = await system.cli("audit", "replay", "--case", case_id, "--json", *args)
    assert code == 0, out + err
    return json.loads(out)  # type: ignore[no-any-return]


def in_clear(text: str, person: dict[str, str]) -> list[str]:
    return [value for value in person.values() if value in text]


def export_text(path: Path) -> str:
    """The export file and every entry's canonical bytes decoded, as one text to search."""
    document = json.loads(path.read_text())
    bodies = [base64.b64decode(e["canonical"]).decode("utf-8", "replace") for e in document["entries"]]
    return path.read_text() + "\n".join(bodies)


async def test_a_case_run_through_the_services_replays_verifies_exports_and_survives_an_erasure(
    system: System, tmp_path: Path
) -> None:
    audit = {
        "audit_head_interval_s": 5.0,
        "audit_signing_key_file": tmp_path / "log-key.pem",
        "audit_witness_file": tmp_path / "witness.jsonl",
    }
    system.settings = system.settings.model_copy(update=audit)
    for name in ("referral", "consent", "scheduling", "privacy", "api"):
        system.start(name)
    system.start("audit", **audit)
    await api_up(system)
    coordinator = Staff(system, "C-1", Role.coordinator)
    ann = Staff(system, "F-ANN", Role.facilitator)
    try:
        await registered(coordinator, "F-ANN", "F-CAL")
        await system.publish(upstream(REF))
        case_id, victim, offender = samples.case_of(REF), f"V-{REF}", f"O-{REF}"
        await coordinator.until(case_id, lambda c: c["status"] == "preparation", what="the case in preparation")
        for facilitator_id in ("F-ANN", "F-CAL"):
            assigned = await coordinator.do(case_id, "rj.facilitator.assign", {"facilitator_id": facilitator_id})
            assert assigned["status"] == "accepted", assigned
        await ann.until(case_id, lambda c: "F-ANN" in c["facilitator_ids"], what="the assignment")
        await prepared(ann, case_id, [victim, offender])

        # A safeguarding hold, lifted; ready again once the risk is assessed after the concern.
        hold = {"concern": "Threats by text", "raised_by": "Victim's caseworker"}
        assert (await ann.do(case_id, "rj.case.put-on-hold", hold))["status"] == "accepted"
        await ann.until(case_id, lambda c: c["hold"]["on_hold"], what="the hold")
        assert (await ann.do(case_id, "rj.case.resume", {"reason": "Police confirmed bail"}))["status"] == "accepted"
        risk = {"assessed_at": datetime.now(UTC).isoformat(), "level": "low", "safe_to_proceed": True}
        assert (await ann.do(case_id, "rj.risk-assessment.record", risk))["status"] == "accepted"
        before_booking = await coordinator.until(
            case_id, lambda c: c["status"] == "ready" and not c["hold"]["on_hold"], what="ready again after the hold"
        )
        moment_before_booking = datetime.now(UTC)
        await asyncio.sleep(0.05)

        starts = await booked(ann, case_id, "F-ANN", lambda: samples.soon(4))
        await ann.until(case_id, lambda c: [m["status"] for m in c["meetings"]] == ["booked"], what="the booking")
        while datetime.now(UTC) < starts:
            await asyncio.sleep(0.2)
        held = {"meeting_id": "M1", "held_at": datetime.now(UTC).isoformat()}
        assert (await ann.do(case_id, "rj.meeting.record-held", held, retries=5))["status"] == "accepted"
        item = {"item_id": "I1", "kind": "apology", "description": "A letter of apology", "owner_id": offender,
                "due_date": (datetime.now(UTC) + timedelta(days=14)).date().isoformat()}  # fmt: skip
        agreement = {"meeting_id": "M1", "items": [item], "consented_by": [victim, offender]}
        assert (await ann.do(case_id, "rj.agreement.record", agreement))["status"] == "accepted"
        assert (await ann.do(case_id, "rj.agreement-item.complete", {"item_id": "I1"}))["status"] == "accepted"
        final = await coordinator.until(case_id, lambda c: c["status"] == "closed", what="the case closed")
        await audit_caught_up(system)

        # Replay gives what the API shows: at the end, and before the booking.
        whole = await replayed(system, case_id, "--reason", REASON)
        assert replay.differences(as_replayed(whole, case_id), final) == []
        assert whole["state"]["status"] == "closed" and whole["state"]["meetings"] == {"M1": "held"}
        types = [entry["type"] for entry in whole["timeline"]]
        for fact in ("rj.case.opened", "rj.case.held", "rj.case.resumed", "rj.meeting.booked", "rj.case.closed"):
            assert fact in types, types
        assert "rj.view.logged" in types, "the view log shows in the case's timeline"
        assert VICTIM["name"] in json.dumps(whole), "opened with a reason, the names show"
        earlier = await replayed(system, case_id, "--at", moment_before_booking.isoformat(), "--reason", REASON)
        assert replay.differences(as_replayed(earlier, case_id), before_booking) == []
        assert earlier["state"]["status"] == "ready" and earlier["state"]["meetings"] == {}
        sealed = json.dumps(await replayed(system, case_id))
        assert not in_clear(sealed, VICTIM) and not in_clear(sealed, OFFENDER) and replay.SEALED in sealed

        # The log verifies against a signed head, and the case's export checks on its own.
        code, out, err = await system.cli("audit", "sign-head")
        assert code == 0, out + err
        code, out, err = await system.cli("audit", "verify")
        assert code == 0 and out.startswith("OK:"), out + err
        export = tmp_path / "case.json"
        code, out, err = await system.cli("audit", "export", "--case", case_id, "--out", str(export))
        assert code == 0, out + err
        code, out, err = await system.cli("audit", "check", str(export))
        assert code == 0 and out.startswith("OK:"), out + err
        text = export_text(export)
        assert not in_clear(text, VICTIM) and not in_clear(text, OFFENDER), "no personal data in clear in the export"
        for marker in [*VICTIM.values(), *OFFENDER.values()]:
            held_in_clear = "SELECT count(*) FROM audit.entries WHERE position($1::bytea in body) > 0"
            assert await system.fetchval(held_in_clear, marker.encode()) == 0, f"{marker!r} in clear in the log"

        # The victim is erased: the case still verifies and replays, and shows nothing of her, even opened.
        code, out, err = await system.cli(
            "privacy", "erase", "--person", victim, "--case", case_id, "--reason", "Asked to be forgotten"
        )
        assert code == 0, out + err
        await audit_caught_up(system)
        code, out, err = await system.cli("audit", "sign-head")
        assert code == 0, out + err
        code, out, err = await system.cli("audit", "verify")
        assert code == 0 and out.startswith("OK:"), out + err
        after = await replayed(system, case_id, "--reason", REASON)
        text = json.dumps(after)
        assert not in_clear(text, VICTIM), in_clear(text, VICTIM)
        (opened,) = [e["details"] for e in after["timeline"] if e["type"] == "rj.case.opened"]
        people = {p["person_id"]: p for p in opened["participants"]}
        assert (people[victim]["name"], people[victim]["contact"]) == (None, None), "hers open as their stand-ins"
        assert people[offender]["name"] == OFFENDER["name"], "the offender's still open"
        assert victim in after["state"]["erased_people"] and after["state"]["status"] == "closed"
        assert "rj.person.erased" in [entry["type"] for entry in after["timeline"]]
        code, out, err = await system.cli("audit", "export", "--case", case_id, "--out", str(export))
        assert code == 0, out + err
        code, out, err = await system.cli("audit", "check", str(export))
        assert code == 0 and out.startswith("OK:"), out + err
        assert not in_clear(export_text(export), VICTIM)
    finally:
        for staff in (coordinator, ann):
            await staff.close()
