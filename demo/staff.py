"""Staff as the demo shows them: signed in with a token from the local issuer, acting on cases over the API's HTTP
interface exactly as a facilitator UI does, and printing what the API answered (each command's outcome, the case
page). The demo reads nothing of the services' databases: what it shows is what a UI would see."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
from rich.console import Console
from rich.markup import escape

from services.api.issuer import LocalIssuer
from services.api.principal import Role


class DemoStepFailed(Exception):
    """The API refused or never answered what the demo's script needs; the message says which step and why."""


class StaffMember:
    """One member of staff, signed in: sends commands (waiting for and printing each outcome) and reads case pages."""

    def __init__(
        self,
        api_url: str,
        login: LocalIssuer,
        force: str,
        staff_id: str,
        role: Role,
        *,
        console: Console,
        stop: asyncio.Event,
    ) -> None:
        self.staff_id = staff_id
        self.role = role
        self.console = console
        self.stop = stop
        self.client = httpx.AsyncClient(
            base_url=api_url,
            headers={"Authorization": f"Bearer {login.mint(staff_id, role, force)}"},
            timeout=40,
        )

    async def close(self) -> None:
        await self.client.aclose()

    # --- commands -------------------------------------------------------------------------------------

    async def do(self, case_id: str, command_type: str, body: dict[str, Any]) -> dict[str, Any]:
        """Send a command about a case and wait for its outcome; the outcome (accepted or rejected, with why)."""
        return await self._sent(f"/cases/{case_id}/commands/{command_type}", command_type, body)

    async def register(self, command_type: str, body: dict[str, Any]) -> dict[str, Any]:
        """Register a facilitator or a venue (a coordinator's command, about no case)."""
        return await self._sent(f"/registrations/{command_type}", command_type, body)

    async def done(self, case_id: str, command_type: str, body: dict[str, Any], *, tries: int = 10) -> dict[str, Any]:
        """``do`` until accepted: a UI's user who tries again when a service has not caught up yet (e.g. scheduling
        hearing that a case is ready a moment after the case page shows it)."""
        for attempt in range(1, tries + 1):
            outcome = await self.do(case_id, command_type, body)
            if outcome["status"] in ("accepted", "unchanged", "already_handled"):  # unchanged: it was already so
                return outcome
            if attempt < tries:
                await asyncio.sleep(0.5)
        raise DemoStepFailed(f"{command_type} by {self.staff_id}: {outcome['status']}: {outcome.get('reason')}")

    async def _sent(self, path: str, command_type: str, body: dict[str, Any]) -> dict[str, Any]:
        sent = await self.client.post(path, json=body)
        if sent.status_code != 202:
            self.show(command_type, f"[red]{sent.status_code}[/] {escape(sent.text)}")
            raise DemoStepFailed(f"{command_type} by {self.staff_id}: {sent.status_code} {sent.text}")
        outcome = await self.outcome(sent.json()["command_id"])
        self.show(command_type, describe_outcome(outcome))
        return outcome

    async def outcome(self, command_id: str, *, timeout_s: float = 30) -> dict[str, Any]:
        """The command's outcome once it is no longer pending (a long poll, as a UI waits)."""
        deadline = time.monotonic() + timeout_s
        while True:
            answer = await self.client.get(f"/commands/{command_id}", params={"wait": 10})
            if answer.status_code != 200:
                raise DemoStepFailed(f"outcome of {command_id}: {answer.status_code} {answer.text}")
            outcome: dict[str, Any] = answer.json()
            if outcome["status"] != "pending" or time.monotonic() > deadline or self.stop.is_set():
                return outcome

    def show(self, command_type: str, what: str) -> None:
        self.console.print(f"  [bold]{self.staff_id:<6}[/] {command_type:<32} {what}")

    # --- reads ----------------------------------------------------------------------------------------

    async def get(self, path: str, **params: Any) -> Any:
        answer = await self.client.get(path, params=params)
        if answer.status_code != 200:
            raise DemoStepFailed(f"GET {path} as {self.staff_id}: {answer.status_code} {answer.text}")
        return answer.json()

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        return await self._answer("POST", path, body)

    async def put(self, path: str, body: dict[str, Any]) -> Any:
        return await self._answer("PUT", path, body)

    async def _answer(self, method: str, path: str, body: dict[str, Any]) -> Any:
        answer = await self.client.request(method, path, json=body)
        if answer.status_code != 200:
            raise DemoStepFailed(f"{method} {path} as {self.staff_id}: {answer.status_code} {answer.text}")
        return answer.json()

    async def until(
        self, case_id: str, check: Callable[[dict[str, Any]], bool], *, what: str, timeout_s: float = 45
    ) -> dict[str, Any]:
        """The case page once ``check`` holds for it (the API's read model follows the topics, a moment behind).
        Polled without personal values (nothing to log), then read once in full: one view-log entry a wait."""
        deadline = time.monotonic() + timeout_s
        while not self.stop.is_set() and time.monotonic() < deadline:
            answer = await self.client.get(f"/cases/{case_id}", params={"personal": "false"})
            if answer.status_code == 200 and check(answer.json()):
                return await self.get(f"/cases/{case_id}")  # type: ignore[no-any-return]
            await asyncio.sleep(0.2)
        raise DemoStepFailed(f"waited {timeout_s:.0f} s for {what} on case {case_id}")

    def show_page(self, page: dict[str, Any]) -> None:
        """The case page as this member of staff sees it: status, who takes part (names as shown to them), the
        meetings, agreement items and letters, and how many facts its timeline holds."""
        people = ", ".join(
            f"{p['person_id']} ({p['role']}) {p['name'] if p['name'] is not None else '[name hidden]'}"
            for p in page["participants"]
        )
        lines = [
            f"[bold]case page[/] as {self.staff_id} ({self.role}): {page['crime_reference']}  status "
            f"[bold]{page['status']}[/]" + (f" ({page['closure_reason']})" if page["closure_reason"] else ""),
            f"    participants: {escape(people)}",
            f"    facilitators: {', '.join(page['facilitator_ids']) or '-'}",
        ]
        if page["meetings"]:
            meetings = ", ".join(
                f"{m['meeting_id']} {m['kind']} {m['status']}"
                + (f" ({m['cancellation_reason']})" if m["cancellation_reason"] else "")
                for m in page["meetings"]
            )
            lines.append(f"    meetings: {meetings}")
        if page["agreement_items"]:
            items = ", ".join(f"{i['item_id']} {i['description']!r} {i['state']}" for i in page["agreement_items"])
            lines.append(f"    agreement items: {escape(items)}")
        if page["indirect_items"]:
            letters = ", ".join(
                f"{i['kind']} {i['item_id']} {i['sender_id']} -> {i['recipient_id']} {i['state']}"
                for i in page["indirect_items"]
            )
            lines.append(f"    indirect items: {letters}")
        withdrawn = [c for c in page["consents"] if c["decision"] == "withdrawn"]
        for consent in withdrawn:
            lines.append(f"    consent withdrawn by {consent['person_id']} ({consent['through']}, {consent['method']})")
        lines.append(f"    timeline: {len(page['timeline'])} facts")
        self.console.print("\n".join(lines) + "\n")


def describe_outcome(outcome: dict[str, Any]) -> str:
    """One line for a command's outcome: accepted with the facts it caused, or rejected with the reason."""
    match outcome["status"]:
        case "accepted":
            facts = sorted({fact["event_type"] for fact in outcome["facts"]})
            return "[green]accepted[/]" + (f": {', '.join(facts)}" if facts else "")
        case "rejected":
            return f"[yellow]rejected[/]: {escape(str(outcome['reason']))}"
        case status:
            return str(status)
