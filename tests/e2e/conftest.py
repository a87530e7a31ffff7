"""Helpers to drive a case the way facilitator UIs do: commands on ``rj.commands``, facts read back."""

from __future__ import annotations

from typing import Any

from demo import samples
from demo.samples import (  # noqa: F401
    STAFF,
    case_of,
    command,
    community_venue,
    consent,
    facilitators,
    next_week,
    prepare,
    prison,
    soon,
)
from schemas import topics
from tests.harness import System, of_type


async def referred_case(system: System, ref: str, **outcome: Any) -> tuple[str, str, str]:
    """Publish a crime and an admitted outcome; return (case id, victim id, offender id) once the
    consent service has taken the case into preparation (as a UI waits to show it)."""
    await system.publish(samples.on_crime_events(samples.crime_recorded(ref), samples.outcome_recorded(ref, **outcome)))
    case_id = case_of(ref)
    await facts(system, topics.CONSENT, case_id, "rj.preparation.started")
    return case_id, f"V-{ref}", f"O-{ref}"


async def schedulable(system: System, case_id: str) -> None:
    """Wait until the scheduling service has heard the case is ready (a UI reads this from its view)."""

    async def ready() -> bool:
        state = await system.fetchval("SELECT state->>'ready' FROM scheduling.cases WHERE key = $1", case_id)
        return state == "true"

    await system.wait_for(ready, what=f"scheduling to hear case {case_id} is ready")


async def facts(
    system: System, topic: str, case_id: str, event_type: str, n: int = 1, **kw: Any
) -> list[dict[str, Any]]:
    """The facts of ``event_type`` about ``case_id`` on ``topic``, once there are ``n`` of them."""

    def about(ms: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [m for m in of_type(ms, event_type) if m["subject"] == case_id]

    return about(await system.read_until(topic, lambda ms: len(about(ms)) >= n, **kw))


async def rejection(system: System, case_id: str, topic: str, n: int = 1) -> list[str]:
    return [m["data"]["reason"] for m in await facts(system, topic, case_id, "rj.command.rejected", n)]


async def facilitators_known(system: System, *ids: str) -> None:
    """Wait until the consent service has heard scheduling's registrations (assignments need them)."""

    async def known() -> bool:
        sql = "SELECT count(*) FROM consent.facilitators WHERE facilitator_id = ANY($1::text[])"
        return await system.fetchval(sql, list(ids)) == len(ids)

    await system.wait_for(known, what=f"consent to know facilitators {ids}")
