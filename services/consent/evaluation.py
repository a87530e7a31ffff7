"""Evaluation, pure: who is invited to the satisfaction survey when a case closes.

Who is invited (DOMAIN stage 7, rule 2):
- nobody on a case closed ``withdrawn`` or ``declined``, or that the consent service saw withdrawn: after a
  withdrawal nothing but the closure notice reaches anyone on the case;
- nobody on a case whose people may not be contacted when it closes (on a safeguarding hold, or sensitive and
  never cleared by a risk assessment): an invitation is contact;
- otherwise every victim, offender and parent or guardian (beside the young person they are there for, who is
  invited too: both took part) who did not decline or withdraw their participation. Supporters, advocates and
  interpreters take part for someone else: the survey measures the parties' own satisfaction, so they are not
  invited.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from schemas.referral import CaseParticipant, Role
from schemas.scheduling import ClosureReason

INVITED_ROLES: frozenset[Role] = frozenset({Role.victim, Role.offender, Role.parent_guardian})

NO_SURVEY_CLOSURES: frozenset[ClosureReason] = frozenset({ClosureReason.withdrawn, ClosureReason.declined})


def survey_invitees(
    participants: Iterable[CaseParticipant],
    closure: ClosureReason,
    *,
    withdrawn_case: bool,
    contact_barred: bool,
    said_no: Callable[[str], bool],
) -> list[CaseParticipant]:
    """The participants to invite, in case order; ``said_no(person_id)``: they declined or withdrew taking part."""
    if closure in NO_SURVEY_CLOSURES or withdrawn_case or contact_barred:
        return []
    return [p for p in participants if p.role in INVITED_ROLES and not said_no(p.person_id)]
