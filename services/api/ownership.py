"""Which force owns each facilitator and venue id (``api.registration_owners``). The ids are global, and the
services that keep them know nothing of forces, so the API records the force that first registered an id through
it: that force alone may register it again, assign that facilitator, or book that venue or facilitator. An id no
one registered through the API (registered before it existed, say) is no one's, and not refused here.

Which command fields name a facilitator or a venue is a table (``RESOURCE_OF_FIELD``), so a new command naming
one is covered as soon as it uses one of those field names."""

from __future__ import annotations

import asyncpg
from pydantic import BaseModel

SCHEMA = "api"

#: The resource each registration command registers, by command type.
RESOURCE_OF_REGISTRATION: dict[str, str] = {"rj.facilitator.register": "facilitator", "rj.venue.register": "venue"}

#: Command fields that name a facilitator or a venue, and which.
RESOURCE_OF_FIELD: dict[str, str] = {
    "facilitator_id": "facilitator",
    "lead_facilitator_id": "facilitator",
    "co_facilitator_id": "facilitator",
    "venue_id": "venue",
}

#: Commands that are about the resource they name (assigning a facilitator): naming another force's is the same
#: 404 as naming one that does not exist. Elsewhere (a booking) the command is about the case, so the field is
#: refused as invalid input (422 naming it).
ABOUT_THE_RESOURCE: frozenset[str] = frozenset({"rj.facilitator.assign"})


async def claim(conn: asyncpg.Connection, resource_type: str, resource_id: str, *, force: str, staff_id: str) -> bool:
    """Claim ``resource_id`` for ``force`` if no force has it yet, in the caller's transaction. True when it is
    ``force``'s (now or already), False when another force's. A concurrent claim of the same id waits for the
    first one's transaction and then sees its owner."""
    await conn.execute(
        f"""INSERT INTO {SCHEMA}.registration_owners (resource_type, resource_id, force, claimed_by)
            VALUES ($1, $2, $3, $4) ON CONFLICT (resource_type, resource_id) DO NOTHING""",
        resource_type,
        resource_id,
        force,
        staff_id,
    )
    owner = await conn.fetchval(
        f"SELECT force FROM {SCHEMA}.registration_owners WHERE resource_type = $1 AND resource_id = $2",
        resource_type,
        resource_id,
    )
    return bool(owner == force)


async def fields_naming_another_forces(conn: asyncpg.Connection, command: BaseModel, *, force: str) -> list[str]:
    """The fields of ``command`` that name a facilitator or venue another force owns (in ``RESOURCE_OF_FIELD``'s
    order); empty when every one it names is ``force``'s or no one's."""
    named = [
        (field, resource_type, value)
        for field, resource_type in RESOURCE_OF_FIELD.items()
        if isinstance(value := getattr(command, field, None), str)
    ]
    if not named:
        return []
    rows = await conn.fetch(
        f"""SELECT o.resource_type, o.resource_id FROM {SCHEMA}.registration_owners o
             JOIN unnest($1::text[], $2::text[]) AS n(resource_type, resource_id) USING (resource_type, resource_id)
            WHERE o.force <> $3""",
        [resource_type for _, resource_type, _ in named],
        [value for _, _, value in named],
        force,
    )
    foreign = {(row["resource_type"], row["resource_id"]) for row in rows}
    return [field for field, resource_type, value in named if (resource_type, value) in foreign]
