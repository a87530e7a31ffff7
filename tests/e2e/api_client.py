"""Staff and participants as the API sees them: HTTP requests with a token from the session's identity provider,
commands sent and their outcomes waited for, the read model polled, exactly as a UI would."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx

from services.api.principal import Role
from tests.harness import System


class Staff:
    """One member of staff, signed in: ``post``/``get`` as them, ``send`` a command and wait for its outcome."""

    def __init__(self, system: System, staff_id: str, role: Role | str, force: str | None = None) -> None:
        self.staff_id = staff_id
        self.client = httpx.AsyncClient(
            base_url=system.api_url,
            headers={"Authorization": f"Bearer {system.token(staff_id, role, force)}"},
            timeout=40,
        )

    async def close(self) -> None:
        await self.client.aclose()

    async def get(self, path: str, **kw: Any) -> httpx.Response:
        return await self.client.get(path, **kw)

    async def post(self, path: str, **kw: Any) -> httpx.Response:
        return await self.client.post(path, **kw)

    async def send(self, case_id: str, command_type: str, body: dict[str, Any], **kw: Any) -> httpx.Response:
        """POST the command; the 202 answer (or whatever refused it)."""
        return await self.post(f"/cases/{case_id}/commands/{command_type}", json=body, **kw)

    async def outcome(self, command_id: str, *, timeout_s: float = 30) -> dict[str, Any]:
        """The command's outcome once it is no longer pending (long-polls as a UI does)."""
        deadline = time.monotonic() + timeout_s
        while True:
            response = await self.get(f"/commands/{command_id}", params={"wait": 10})
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            if body["status"] != "pending" or time.monotonic() > deadline:
                return body
            await asyncio.sleep(0.05)

    async def do(self, case_id: str, command_type: str, body: dict[str, Any], *, retries: int = 0) -> dict[str, Any]:
        """Send a command and wait for it to be accepted; ``retries``: send again after a rejection (a UI whose
        user tries again once the services have caught up, e.g. a booking just after the case became ready)."""
        for attempt in range(retries + 1):
            sent = await self.send(case_id, command_type, body)
            assert sent.status_code == 202, f"{command_type}: {sent.status_code} {sent.text}"
            outcome = await self.outcome(sent.json()["command_id"])
            if outcome["status"] == "accepted" or attempt == retries:
                return outcome
            await asyncio.sleep(0.5)
        raise AssertionError("unreachable")

    async def case(self, case_id: str, **params: Any) -> httpx.Response:
        return await self.get(f"/cases/{case_id}", params=params)

    async def until(
        self, case_id: str, check: Callable[[dict[str, Any]], bool], *, what: str, timeout_s: float = 45, **params: Any
    ) -> dict[str, Any]:
        """The case page once ``check`` holds for it (the read model follows the topics, a moment behind)."""
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            response = await self.case(case_id, **params)
            if response.status_code == 200:
                last = response.json()
                if check(last):
                    return last  # type: ignore[no-any-return]
            await asyncio.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; last page: {last}")


async def api_up(system: System) -> None:
    async def answers() -> bool:
        try:
            async with httpx.AsyncClient(base_url=system.api_url, timeout=2) as client:
                return (await client.get("/openapi.json")).status_code == 200
        except httpx.HTTPError:
            return False

    await system.wait_for(answers, what="the API to answer")


ALL_DAY = [{"weekday": d, "start": "00:00:00", "end": "23:59:59"} for d in range(7)]
"""Working hours that leave any meeting time free."""


async def start_with_api(system: System) -> None:
    """Referral, consent, scheduling and the API, once the API answers."""
    for name in ("referral", "consent", "scheduling", "api"):
        system.start(name)
    await api_up(system)


async def registered(coordinator: Staff, *facilitator_ids: str) -> None:
    """Register the facilitators (free all day) and the venue V-HUB, each accepted."""
    for facilitator_id in facilitator_ids:
        body = {"facilitator_id": facilitator_id, "specialist": False, "working_hours": ALL_DAY}
        sent = await coordinator.post("/registrations/rj.facilitator.register", json=body)
        assert sent.status_code == 202, sent.text
        assert (await coordinator.outcome(sent.json()["command_id"]))["status"] == "accepted"
    venue = {"venue_id": "V-HUB", "kind": "community", "name": "Worcester hub"}
    sent = await coordinator.post("/registrations/rj.venue.register", json=venue)
    assert sent.status_code == 202, sent.text
    assert (await coordinator.outcome(sent.json()["command_id"]))["status"] == "accepted"
