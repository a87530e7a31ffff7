"""Who may see which case and send which command: the issue's roles as one table, checked cell by cell.

A cell is (role, command type, assigned to the case or not, same force or another): the expected answer is
what the issue says a person in that role may do there, written out by hand rather than derived from the
code under test."""

from __future__ import annotations

import itertools

import pytest

from schemas.registry import COMMAND_OWNER
from services.api import policy
from services.api.principal import CaseAccess, Principal, Role

FORCE = "https://crime.example/west-midlands"
OTHER_FORCE = "https://crime.example/west-mercia"

FAC, VOL, COORD, AUD = Role.facilitator, Role.volunteer, Role.coordinator, Role.auditor

# On a case the person may see, which roles may send each of these command types.
ALLOWED_ON_A_VISIBLE_CASE: dict[str, set[Role]] = {
    # ordinary casework: every role that acts
    "rj.consent.give": {FAC, VOL, COORD},
    "rj.consent.withdraw": {FAC, VOL, COORD},
    "rj.meeting.book": {FAC, VOL, COORD},
    "rj.case.add-note": {FAC, VOL, COORD},
    "rj.indirect.approve-item": {FAC, VOL, COORD},
    # not for volunteers
    "rj.risk-assessment.record": {FAC, COORD},
    "rj.case.close": {FAC, COORD},
    # coordinators only: assignment, registrations, personal data itself
    "rj.facilitator.assign": {COORD},
    "rj.facilitator.register": {COORD},
    "rj.venue.register": {COORD},
    "rj.privacy.erase": {COORD},
    "rj.retention-hold.place": {COORD},
    "rj.retention-hold.lift": {COORD},
    "rj.participant.rectify": {COORD},
    # the system's own, a fact, and what is no command at all: nobody
    "rj.indirect.release-due": set(),
    "rj.consent.erasures-due": set(),
    "rj.consent.given": set(),
    "rj.no-such.command": set(),
}

# Whether the person sees the case at all: (role, assigned to it, same force) -> sees it.
SEES: dict[tuple[Role, bool, bool], bool] = {
    (Role.facilitator, True, True): True,
    (Role.facilitator, False, True): False,
    (Role.facilitator, True, False): False,  # an id that happens to match on another force's case
    (Role.facilitator, False, False): False,
    (Role.volunteer, True, True): True,
    (Role.volunteer, False, True): False,
    (Role.volunteer, True, False): False,
    (Role.volunteer, False, False): False,
    (Role.coordinator, True, True): True,
    (Role.coordinator, False, True): True,
    (Role.coordinator, True, False): False,
    (Role.coordinator, False, False): False,
    (Role.auditor, True, True): True,
    (Role.auditor, False, True): True,
    (Role.auditor, True, False): False,
    (Role.auditor, False, False): False,
}

CELLS = [
    (role, command_type, assigned, same_force)
    for role, command_type, assigned, same_force in itertools.product(
        Role, ALLOWED_ON_A_VISIBLE_CASE, (True, False), (True, False)
    )
]


def _case(*, assigned_to: str | None, same_force: bool) -> CaseAccess:
    facilitators = {"F-OTHER"} | ({assigned_to} if assigned_to else set())
    return CaseAccess(
        case_id="C-1", force=FORCE if same_force else OTHER_FORCE, facilitator_ids=frozenset(facilitators)
    )


@pytest.mark.parametrize(("role", "command_type", "assigned", "same_force"), CELLS)
def test_each_role_may_act_only_where_the_issue_says(
    role: Role, command_type: str, assigned: bool, same_force: bool
) -> None:
    me = Principal(staff_id="S-1", role=role, force=FORCE)
    case = _case(assigned_to="S-1" if assigned else None, same_force=same_force)
    sees = policy.may_see(me, case)
    allowed = policy.may_issue(me, command_type)
    assert sees is SEES[(role, assigned, same_force)]
    assert allowed is (role in ALLOWED_ON_A_VISIBLE_CASE[command_type])
    reason = policy.refusal(me, command_type)
    assert (reason is None) is allowed
    if reason is not None:
        assert command_type in reason or "auditor" in reason  # says what was refused, or that auditors only read


def test_the_visibility_table_covers_every_role_assignment_and_force() -> None:
    assert set(SEES) == set(itertools.product(Role, (True, False), (True, False)))


def test_staff_may_send_every_command_of_the_contract_but_the_systems_own() -> None:
    assert policy.STAFF_COMMANDS == set(COMMAND_OWNER) - {"rj.indirect.release-due", "rj.consent.erasures-due"}
    # what every facilitator does day to day is on offer
    assert {"rj.consent.give", "rj.meeting.book", "rj.case.close", "rj.privacy.erase"} <= policy.STAFF_COMMANDS


def test_a_coordinator_may_send_every_staff_command_and_an_auditor_none() -> None:
    coordinator = Principal(staff_id="C-1", role=Role.coordinator, force=FORCE)
    auditor = Principal(staff_id="A-1", role=Role.auditor, force=FORCE)
    assert all(policy.may_issue(coordinator, command_type) for command_type in policy.STAFF_COMMANDS)
    assert not any(policy.may_issue(auditor, command_type) for command_type in policy.STAFF_COMMANDS)


def test_the_refusal_says_why_in_words_for_the_caller() -> None:
    volunteer = Principal(staff_id="V-1", role=Role.volunteer, force=FORCE)
    facilitator = Principal(staff_id="F-1", role=Role.facilitator, force=FORCE)
    auditor = Principal(staff_id="A-1", role=Role.auditor, force=FORCE)
    assert policy.refusal(volunteer, "rj.case.close") == "a volunteer facilitator may not send rj.case.close"
    assert policy.refusal(facilitator, "rj.facilitator.assign") == "only a coordinator may send rj.facilitator.assign"
    assert policy.refusal(auditor, "rj.consent.give") == "auditors have read-only access: they send no commands"
    assert policy.refusal(facilitator, "rj.indirect.release-due") == (
        "rj.indirect.release-due is sent by the system itself, never by staff"
    )
    assert policy.refusal(facilitator, "rj.consent.given") == "rj.consent.given is not a command staff can send"


@pytest.mark.parametrize(("role", "needs_reason"), [(role, role is Role.auditor) for role in Role])
def test_only_an_auditor_must_state_a_reason_to_see_personal_data(role: Role, needs_reason: bool) -> None:
    assert policy.needs_reason_for_personal_data(Principal(staff_id="S-1", role=role, force=FORCE)) is needs_reason


@pytest.mark.parametrize(("role", "sees"), [(role, role is Role.auditor) for role in Role])
def test_only_an_auditor_sees_the_view_log_in_a_cases_timeline(role: Role, sees: bool) -> None:
    assert policy.may_see_view_log(Principal(staff_id="S-1", role=role, force=FORCE)) is sees
