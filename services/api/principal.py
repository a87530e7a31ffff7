"""Who is asking: a member of staff as their force's identity provider vouches for them, and what a case needs
them to be to see it. Shared by the token verifier, the policy, the read model's queries and the HTTP layer."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    facilitator = "facilitator"  # sees and acts on the cases assigned to them
    volunteer = "volunteer"  # a volunteer facilitator: as a facilitator, but no risk assessments, no closure
    coordinator = "coordinator"  # assigns; sees and acts on every case of their force
    auditor = "auditor"  # read-only, every case of their force; personal data only with a stated reason


@dataclass(frozen=True, slots=True)
class Principal:
    """A verified caller. ``staff_id`` is the id commands name as their actor (``Actor(kind="staff")``) and
    assignments name as ``facilitator_id``; ``force`` is the force's crime-system source, as cases carry it."""

    staff_id: str
    role: Role
    force: str
    name: str | None = None


@dataclass(frozen=True, slots=True)
class CaseAccess:
    """What deciding who may see a case needs: its force and the facilitators assigned to it now."""

    case_id: str
    force: str
    facilitator_ids: frozenset[str]
