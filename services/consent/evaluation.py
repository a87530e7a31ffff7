"""Evaluation, pure: who is invited to the satisfaction survey when a case closes.

Who is invited (DOMAIN stage 7, rule 2):
- nobody on a case closed ``withdrawn`` or ``declined``, or that the consent service saw withdrawn: after a
  withdrawal nothing but the closure notice reaches anyone on the case;
- nobody on a case whose people may not be contacted when it closes (on a safeguarding hold, or sensitive and
  never cleared by a risk assessment): an invitation is contact;
- on a case closed ``uncontactable``, nobody the service could not reach: a person whose unanswered attempts in a
  row (since they were last reached, or ever) met the ``uncontactable_after_attempts`` setting at closure, the
  count that closes a case as uncontactable. An invitation would be one more unanswered attempt, to someone we
  could not reach, perhaps at an address that no longer reaches them. The others are invited as on any closure:
  the victim the service was in touch with, on a case that closed because the offender could not be reached,
  also when nothing in the contact log shows it (staff recorded her consent through a facilitator, from a letter
  or a call not logged as an attempt);
- otherwise every victim, offender and parent or guardian (beside the young person they are there for, who is
  invited too: both took part) who did not decline or withdraw their participation. Supporters, advocates and
  interpreters take part for someone else: the survey measures the parties' own satisfaction, so they are not
  invited.

Who declined or withdrew (``said_no``) never matters on a case as the referral service makes it: every victim and
offender is a required participant, and a parent or guardian is required with them, so any of them saying no to
taking part withdraws the case and nobody is invited. The filter is kept for the contract, which allows a
participant who is not required (``CaseParticipant.required``), and is tested as a pure function and on such a
case.
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
    out_of_reach: Callable[[str], bool],
) -> list[CaseParticipant]:
    """The participants to invite, in case order; ``said_no(person_id)``: they declined or withdrew taking part;
    ``out_of_reach(person_id)``: the service could not reach them (considered only on an ``uncontactable``
    closure)."""
    if closure in NO_SURVEY_CLOSURES or withdrawn_case or contact_barred:
        return []
    unreachable = closure is ClosureReason.uncontactable
    return [
        p
        for p in participants
        if p.role in INVITED_ROLES and not said_no(p.person_id) and not (unreachable and out_of_reach(p.person_id))
    ]
