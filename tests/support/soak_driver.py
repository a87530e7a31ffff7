"""Staff and participants for the soak (issue 21), over HTTP alone, as their UIs would be: each force's coordinator
registers facilitators and a venue, then works cases (assigns, records preparation meetings and consents, assesses
risk, holds and resumes, books), and participants decline or withdraw at random moments, through a facilitator or
their own withdraw link.

The services are being killed and the database turned read-only meanwhile, so every request is retried: a refused
connection or a 5xx means the API (or what it needs) is away for a moment, and the same request goes again with the
same ``Idempotency-Key``, so it is one command however many times it is sent. A command that stays pending is
waited for. What each command became is kept (``Driver.outcomes``) for the report, never asserted on: the soak's
assertions are about the system's promises, not about how far a case got.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from demo import samples
from services.api.principal import Role
from tests.e2e.api_client import ALL_DAY, Staff
from tests.harness import System
from tests.support.soak_traffic import PREFIX, Crime

PATIENCE_S = 120.0
"""How long one request may keep failing (the API killed and restarting, the database read-only) before the driver
gives up on it: far longer than any restart takes."""

PLANS = ("booked", "booked_then_withdrawn", "withdrawn_in_preparation", "declined", "withdrawal_races_booking", "held")


@dataclass
class Desk:
    """One force's office: its coordinator (who does everything here), facilitators, specialist and venue."""

    force: str
    coordinator: Staff
    facilitators: list[str]
    specialist: str
    venue: str


class Driver:
    def __init__(self, system: System, forces: list[str], seed: int = 21) -> None:
        self.system = system
        self.rng = random.Random(seed)
        self.desks = {
            force: Desk(
                force=force,
                coordinator=Staff(system, f"C-{PREFIX[force]}", Role.coordinator, force=force),
                facilitators=[f"F-{PREFIX[force]}{n}" for n in range(1, 5)],
                specialist=f"F-{PREFIX[force]}S",
                venue=f"V-{PREFIX[force]}",
            )
            for force in forces
        }
        self.participant = httpx.AsyncClient(timeout=30)
        self.outcomes: Counter[str] = Counter()  # "<command type> <status>": what happened, for the report
        self.plans: dict[str, str] = {}  # case id -> the plan it was driven through

    async def close(self) -> None:
        for desk in self.desks.values():
            await desk.coordinator.close()
        await self.participant.aclose()

    # --- HTTP that outlives the API's restarts -------------------------------------------------------------

    async def request(self, client: httpx.AsyncClient, method: str, url: str, **kw: Any) -> httpx.Response | None:
        """The answer to the request, sent again while the API is away (refused, dropped, 5xx); None if it stays
        away for ``PATIENCE_S``."""
        deadline = time.monotonic() + PATIENCE_S
        while True:
            try:
                response = await client.request(method, url, **kw)
                if response.status_code < 500:
                    return response
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.5)

    async def command(
        self, staff: Staff, case_id: str | None, command_type: str, body: dict[str, Any], *, wait: bool = True
    ) -> str:
        """Send a command (the same one however often it has to be sent) and, with ``wait``, what became of it:
        accepted, rejected, unchanged, already_handled, or pending if no answer came in time."""
        path = f"/cases/{case_id}/commands/{command_type}" if case_id else f"/registrations/{command_type}"
        key = {"Idempotency-Key": uuid.uuid4().hex}
        sent = await self.request(staff.client, "POST", path, json=body, headers=key)
        if sent is None or sent.status_code != 202:
            status = "unanswered" if sent is None else f"http {sent.status_code}"
            self.outcomes[f"{command_type} {status}"] += 1
            return status
        command_id = sent.json()["command_id"]
        status = await self.outcome(staff, command_id) if wait else "sent"
        self.outcomes[f"{command_type} {status}"] += 1
        return status

    async def outcome(self, staff: Staff, command_id: str) -> str:
        deadline = time.monotonic() + PATIENCE_S
        while time.monotonic() < deadline:
            answer = await self.request(staff.client, "GET", f"/commands/{command_id}", params={"wait": 5})
            if answer is not None and answer.status_code == 200 and answer.json()["status"] != "pending":
                return str(answer.json()["status"])
            await asyncio.sleep(0.2)
        return "pending"

    async def page(self, staff: Staff, case_id: str) -> dict[str, Any] | None:
        """The case page without personal values (a UI polling status: nothing to log), or None if not shown."""
        response = await self.request(staff.client, "GET", f"/cases/{case_id}", params={"personal": "false"})
        return response.json() if response is not None and response.status_code == 200 else None  # type: ignore[no-any-return]

    async def until(
        self, staff: Staff, case_id: str, check: Any, timeout_s: float = PATIENCE_S
    ) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            page = await self.page(staff, case_id)
            if page is not None and check(page):
                return page
            await asyncio.sleep(0.3)
        return None

    # --- the office opens ----------------------------------------------------------------------------------

    async def register(self) -> None:
        """Each force registers its facilitators (one a specialist), free all day, and its venue."""
        for desk in self.desks.values():
            for facilitator_id in [*desk.facilitators, desk.specialist]:
                body = {
                    "facilitator_id": facilitator_id,
                    "specialist": facilitator_id == desk.specialist,
                    "working_hours": ALL_DAY,
                }
                await self.command(desk.coordinator, None, "rj.facilitator.register", body)
            venue = {"venue_id": desk.venue, "kind": "community", "name": f"{desk.venue} community hall"}
            await self.command(desk.coordinator, None, "rj.venue.register", venue)

    # --- a case, worked ------------------------------------------------------------------------------------

    async def work(self, crimes: list[Crime], concurrency: int = 6) -> None:
        """Work every case among ``crimes`` through a plan chosen at random (seeded), a few cases at once."""
        gate = asyncio.Semaphore(concurrency)
        chosen = [(crime, self.rng.choice(PLANS), self.rng.random()) for crime in crimes]

        async def one(crime: Crime, plan: str, moment: float) -> None:
            async with gate:
                self.plans[crime.case_id] = plan
                await self.work_case(crime, plan, moment)

        await asyncio.gather(*(one(*c) for c in chosen))

    async def work_case(self, crime: Crime, plan: str, moment: float) -> None:
        """``moment`` (0-1) says when, within its stage, a withdrawal comes."""
        desk = self.desks[crime.force]
        staff, case_id = desk.coordinator, crime.case_id
        if await self.until(staff, case_id, lambda c: c["status"] == "preparation") is None:
            return  # never came into preparation as far as the API shows: the checks will say why
        slot = crime.index
        lead = desk.specialist if crime.sensitive else desk.facilitators[slot % len(desk.facilitators)]
        co = desk.facilitators[(slot + 1) % len(desk.facilitators)]
        for facilitator_id in (lead, co):
            for _ in range(10):  # consent may not have heard of the registration yet
                if await self.command(staff, case_id, "rj.facilitator.assign", {"facilitator_id": facilitator_id}) in (
                    "accepted",
                    "unchanged",
                ):
                    break
                await asyncio.sleep(1)
        if crime.sensitive:
            await self.assess_risk(staff, case_id)

        victim, offender = crime.victim_id, crime.offender_id
        for person in (victim, offender):
            met = {"person_id": person, "met_at": datetime.now(UTC).isoformat(), "method": "in_person"}
            await self.command(staff, case_id, "rj.preparation-meeting.record", met)
            if plan == "declined" and person == offender:
                await self.decide(staff, case_id, "rj.consent.decline", person, reason="Does not want to meet")
                return
            await self.decide(staff, case_id, "rj.consent.give", person)
            if plan == "withdrawn_in_preparation" and (person == victim) == (moment < 0.5):
                await self.withdraw(crime, person, moment)
                return

        booking = self.booking(crime, lead, co)
        if plan == "withdrawal_races_booking":
            # Sent back to back, the withdrawal first: it must win, whoever reads what first.
            await self.until(staff, case_id, lambda c: c["status"] == "ready", timeout_s=30)
            await self.decide(staff, case_id, "rj.consent.withdraw", offender, wait=False)
            await self.command(staff, case_id, "rj.meeting.book", booking)
            return
        if plan == "held":
            await self.until(staff, case_id, lambda c: c["status"] == "ready", timeout_s=30)
            hold = {"concern": "A threat reported by the victim's caseworker", "raised_by": "Caseworker"}
            await self.command(staff, case_id, "rj.case.put-on-hold", hold)
            await self.command(staff, case_id, "rj.meeting.book", booking)  # on hold: must be refused
            await asyncio.sleep(moment * 2)
            await self.command(staff, case_id, "rj.case.resume", {"reason": "Police confirmed bail conditions"})
            await self.assess_risk(staff, case_id)
        if not await self.book(staff, case_id, booking):
            return
        if plan == "booked_then_withdrawn":
            await asyncio.sleep(moment * 3)
            await self.withdraw(crime, victim if moment < 0.5 else offender, moment)

    def booking(self, crime: Crime, lead: str, co: str) -> dict[str, Any]:
        """A conference at a time of the case's own (an hour per crime from a week on): no facilitator or venue
        is wanted twice at once."""
        starts = samples.next_week(hour=0, days=8) + timedelta(hours=crime.index)
        return {
            "meeting_id": "M1",
            "kind": "conference",
            "starts_at": starts.isoformat(),
            "ends_at": (starts + timedelta(minutes=45)).isoformat(),
            "lead_facilitator_id": lead,
            "co_facilitator_id": co,
            "venue_id": self.desks[crime.force].venue,
        }

    async def book(self, staff: Staff, case_id: str, booking: dict[str, Any]) -> bool:
        """Book once the case is ready; scheduling hears it a moment after the API shows it, so a refusal is tried
        again, as a UI's user would."""
        if await self.until(staff, case_id, lambda c: c["status"] == "ready") is None:
            return False
        for _ in range(15):
            status = await self.command(staff, case_id, "rj.meeting.book", booking)
            if status in ("accepted", "already_handled"):
                return True
            page = await self.page(staff, case_id)
            if page is not None and page["status"] == "closed":
                return False
            await asyncio.sleep(1)
        return False

    async def assess_risk(self, staff: Staff, case_id: str) -> None:
        risk = {"assessed_at": datetime.now(UTC).isoformat(), "level": "low", "safe_to_proceed": True}
        await self.command(staff, case_id, "rj.risk-assessment.record", risk)

    async def decide(
        self, staff: Staff, case_id: str, command_type: str, person: str, *, reason: str | None = None,
        wait: bool = True,
    ) -> str:  # fmt: skip
        body: dict[str, Any] = {"person_id": person, "through": "facilitator", "method": "in_person"}
        if reason:
            body["reason"] = reason
        return await self.command(staff, case_id, command_type, body, wait=wait)

    async def withdraw(self, crime: Crime, person: str, moment: float) -> None:
        """The person withdraws: by their own link (on a case that has links) or through the facilitator."""
        desk = self.desks[crime.force]
        if not crime.sensitive and moment < 0.7:
            made = await self.request(
                desk.coordinator.client, "POST", f"/cases/{crime.case_id}/withdraw-links", json={"person_id": person}
            )
            if made is not None and made.status_code == 200:
                answer = await self.request(self.participant, "POST", made.json()["url"])
                # 410: the link was used already (the first POST went through, its answer was lost to a kill)
                status = "unanswered" if answer is None else str(answer.status_code)
                self.outcomes[f"participant link withdrawal {status}"] += 1
                return
        await self.decide(desk.coordinator, crime.case_id, "rj.consent.withdraw", person)
