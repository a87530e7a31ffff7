"""Who may see which case and send which command over the API: the roles of the issue, as plain rules.

Seeing comes first and is about the case (same force always; facilitators and volunteers only the cases
assigned to them); issuing is about the command type alone, so the HTTP layer asks ``may_see`` (a case you
may not see answers 404, as one that does not exist) and then ``may_issue`` (403 with ``refusal``'s reason).
The owning service still decides whether the command makes sense for the case; this only says who may ask.
"""

from __future__ import annotations

from schemas.consent import AssignFacilitator, DecideErasuresDue, RecordRiskAssessment
from schemas.indirect import ReleaseDueItems
from schemas.privacy import PRIVACY_COMMANDS
from schemas.registry import COMMAND_OWNER, REGISTRY
from schemas.scheduling import CloseCase, RegistrationCommand
from services.api.principal import CaseAccess, Principal, Role

#: Commands only the system itself sends (its sweeps and timers): no member of staff may send them.
SYSTEM_COMMANDS: frozenset[str] = frozenset({ReleaseDueItems.event_type, DecideErasuresDue.event_type})

#: Every command type staff may send over the API: every command the contract has an owner for, less the
#: system's own. Derived from the registry, so a new command is covered (and offered) as soon as it exists.
STAFF_COMMANDS: frozenset[str] = frozenset(COMMAND_OWNER) - SYSTEM_COMMANDS

#: Deciding who works on cases, which resources exist, and acting on personal data itself (erasure,
#: retention holds, rectification) is a coordinator's job.
COORDINATOR_COMMANDS: frozenset[str] = frozenset(
    {
        AssignFacilitator.event_type,
        *(event_type for event_type, model in REGISTRY.models.items() if issubclass(model, RegistrationCommand)),
        *(model.event_type for model in PRIVACY_COMMANDS),
    }
)

#: A volunteer facilitator works a case as a facilitator does, but neither assesses risk nor closes a case.
NOT_FOR_VOLUNTEERS: frozenset[str] = frozenset({RecordRiskAssessment.event_type, CloseCase.event_type})

_SEES_WHOLE_FORCE = frozenset({Role.coordinator, Role.auditor})


def may_see(principal: Principal, case: CaseAccess) -> bool:
    """No role sees another force's cases; coordinators and auditors see every case of their force;
    facilitators and volunteers only those they are assigned to now."""
    if principal.force != case.force:
        return False
    return principal.role in _SEES_WHOLE_FORCE or principal.staff_id in case.facilitator_ids


def refusal(principal: Principal, command_type: str) -> str | None:
    """Why ``principal`` may not send ``command_type``, in words fit to show them; None when they may."""
    if command_type in SYSTEM_COMMANDS:
        return f"{command_type} is sent by the system itself, never by staff"
    if command_type not in STAFF_COMMANDS:
        return f"{command_type} is not a command staff can send"
    if principal.role is Role.auditor:
        return "auditors have read-only access: they send no commands"
    if command_type in COORDINATOR_COMMANDS and principal.role is not Role.coordinator:
        return f"only a coordinator may send {command_type}"
    if command_type in NOT_FOR_VOLUNTEERS and principal.role is Role.volunteer:
        return f"a volunteer facilitator may not send {command_type}"
    return None


def may_issue(principal: Principal, command_type: str) -> bool:
    """Whether ``principal``'s role allows ``command_type`` at all (on a case they may see)."""
    return refusal(principal, command_type) is None


def needs_reason_for_personal_data(principal: Principal) -> bool:
    """Auditors see personal data only when they state why (the reason goes into the view log)."""
    return principal.role is Role.auditor


def may_see_view_log(principal: Principal) -> bool:
    """Only auditors see who viewed a case's personal data (the view log, in the case's timeline): they check staff's
    use of it; staff themselves never see who else looked."""
    return principal.role is Role.auditor
