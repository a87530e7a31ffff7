"""The read model's rules, pure (no I/O): which state a late fact may still move a case, a meeting or an item to,
what a fact says in the timeline without naming anyone it must not, who decided it, and which command it answers.

Facts of one topic arrive in the order they were decided; facts of different topics do not (consent's may overtake
referral's). So every state here only moves forward by rank: a fact that comes late never drags a closed case back
to "accepted", and the case row itself is made by whichever fact comes first (``services.api.readmodel``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from schemas.commands import CommandAlreadyHandled, CommandNoChange, CommandRejected
from schemas.envelope import CloudEvent, EventData
from services.runtime.fieldcrypt import is_token

# --- states that only move forward -----------------------------------------------------------------

CASE_STATUS_RANK: Mapping[str, int] = {
    "referred": 0,
    "accepted": 1,
    "preparation": 2,
    "ready": 3,
    "withdrawn": 8,
    "declined": 9,
    "closed": 10,
}
"""A case's status by how far along it is: declined and closed are where a case ends."""

MEETING_STATUS_RANK: Mapping[str, int] = {"proposed": 0, "booked": 1, "held": 2, "cancelled": 3}
ITEM_STATE_RANK: Mapping[str, int] = {"open": 0, "due_soon": 1, "overdue": 2, "completed": 3}
DEADLINE_STATE_RANK: Mapping[str, int] = {"due": 0, "breached": 1, "met": 2}
NOTIFICATION_STATE_RANK: Mapping[str, int] = {
    "scheduled": 0,
    "cancelled": 1,
    "failed": 2,
    "uncertain": 3,
    "sent": 4,
}
"""A notification's state by how near the message came to its person. Each notification gets one outcome from
notify, so two come only from a race (a cancellation decided while the send was under way, a send in doubt
resolved later); the one shown is then the one that says the most about what the person may have received: sent
(it went) over uncertain (it may have gone: never shown as not sent) over failed (tried, refused) over cancelled
(never tried); any of them over scheduled, which only says it was decided."""

INDIRECT_STATE_RANK: Mapping[str, int] = {
    "submitted": 0,
    "approved": 1,
    "rejected": 1,
    "released": 2,
    "withdrawn": 2,
    "delivered": 3,
}


def case_status_after(current: str | None, new: str, *, readiness_lost: bool = False) -> str:
    """The status a case has after a fact saying ``new``: only ever forward, except that a ready case whose
    readiness was lost (a re-assessment found it unsafe) is back in preparation."""
    if current is None:
        return new
    if readiness_lost and current == "ready":
        return new
    return new if CASE_STATUS_RANK[new] >= CASE_STATUS_RANK.get(current, -1) else current


def moves_forward(ranks: Mapping[str, int], current: str | None, new: str) -> bool:
    """Whether a state may go from ``current`` to ``new`` (a repeat of the same rank may: it refreshes)."""
    return current is None or ranks[new] >= ranks.get(current, -1)


def rank_sql(column: str, ranks: Mapping[str, int]) -> str:
    """A SQL expression giving ``column``'s rank (the SQL twin of ``moves_forward``, for an upsert's condition);
    the names are ours, never a caller's input."""
    cases = " ".join(f"WHEN '{state}' THEN {rank}" for state, rank in ranks.items())
    return f"(CASE {column} {cases} ELSE -1 END)"


# --- who decided it, and which command it answers ----------------------------------------------------


def actor_of(document: Mapping[str, Any]) -> str | None:
    """Who decided a fact (``kind:id``), from its first ``*_by`` actor held in clear (or, for the view log, who looked:
    ``staff:viewer_id``). An actor that is sealed (who declined or withdrew) stays unnamed here: the timeline's plain
    columns never say it."""
    for name, value in document.items():
        if name.endswith("_by") and isinstance(value, Mapping):
            kind, actor_id = value.get("kind"), value.get("id")
            if isinstance(kind, str) and isinstance(actor_id, str) and not is_token(kind) and not is_token(actor_id):
                return f"{kind}:{actor_id}"
    viewer = document.get("viewer_id")
    if isinstance(viewer, str) and not is_token(viewer):
        return f"staff:{viewer}"
    return None


@dataclass(frozen=True)
class CommandAnswer:
    """One row of ``api.command_answers``: what a fact says about the command that caused it."""

    command_id: str
    status: str  # accepted | rejected | already_handled | unchanged
    reason: str | None = None


def answer_of(event: CloudEvent[Any]) -> CommandAnswer | None:
    """What a fact tells the sender of a command: a rejection (why), a repeat, nothing to change (its service found
    it already so), or a fact the command caused (its id is the envelope's ``causationid``, or the payload's
    ``command_id`` where the fact names the command it decides). A fact that starts a chain of its own
    (participant-facing) names no command, and answers none."""
    data = event.data
    if isinstance(data, CommandRejected):
        return CommandAnswer(data.command_id, "rejected", data.reason)
    if isinstance(data, CommandAlreadyHandled):
        return CommandAnswer(data.command_id, "already_handled")
    if isinstance(data, CommandNoChange):
        return CommandAnswer(data.command_id, "unchanged")
    command_id = getattr(data, "command_id", None) or event.causationid
    if isinstance(command_id, str) and command_id:
        return CommandAnswer(command_id, "accepted")
    return None


# --- what the timeline says ------------------------------------------------------------------------------


def hide_sealed(value: Any, path: str = "") -> tuple[Any, list[str]]:
    """``value`` (a sealed fact's document) with every sealed token replaced by None, and the paths replaced: what
    is shown of a fact when personal data is not asked for."""
    if is_token(value):
        return None, [path]
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        paths: list[str] = []
        for name, inner in value.items():
            out[name], found = hide_sealed(inner, f"{path}.{name}" if path else name)
            paths += found
        return out, paths
    if isinstance(value, list):
        items: list[Any] = []
        paths = []
        for i, inner in enumerate(value):
            shown, found = hide_sealed(inner, f"{path}[{i}]")
            items.append(shown)
            paths += found
        return items, paths
    return value, []


def _pounds(pence: int) -> str:
    return f"£{pence / 100:.2f}"


def _when(moment: Any) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if hasattr(moment, "strftime") else str(moment)


def _to_whom(d: Any) -> str:
    """Whom a notification went to, by kind only: its recipient is sealed (with the kind it can name who withdrew)."""
    return "a participant" if d.recipient_kind == "participant" else "staff"


def _message(d: Any) -> str:
    by = f" by {d.channel}" if d.channel else ""
    return f"Message {d.kind} to {_to_whom(d)}{by}"


# Built only from fields held in clear on the fact: never a sealed value, never who declined or withdrew.
_SUMMARIES: dict[str, Callable[[Any], str]] = {
    "rj.case.opened": lambda d: f"Case opened for crime {d.crime_reference} with {len(d.participants)} participants",
    "rj.case.accepted": lambda d: (
        "Referral accepted at screening"
        + (" (specialist facilitator and risk assessment needed first)" if d.specialist_required else "")
    ),
    "rj.case.declined": lambda d: f"Referral declined at screening: {d.reason}",
    "rj.case.offender-joined": lambda d: f"Offender {d.participant.person_id} joined the case",
    "rj.victim-information.due": lambda d: f"RJ information due to {d.person_id} by {d.due_date}",
    "rj.victim-information.provided": lambda d: (
        f"RJ information given to {d.person_id}" + ("" if d.on_time else " (late)")
    ),
    "rj.victim-information.overdue": lambda d: f"Victims' Code breach: RJ information to {d.person_id} is overdue",
    "rj.victim-support.referral-due": lambda d: f"Victim support referral for {d.person_id} due by {d.due_date}",
    "rj.victim-support.referral-recorded": lambda d: (
        f"Victim support referral for {d.person_id}: {d.outcome}" + ("" if d.on_time else " (late)")
    ),
    "rj.victim-support.referral-overdue": lambda d: (
        f"Victims' Code breach: support referral for {d.person_id} is overdue"
    ),
    "rj.case.reoffence-recorded": lambda d: f"A later offence was recorded against {d.person_id}",
    "rj.preparation.started": lambda d: "Preparation started",
    "rj.facilitator.assigned": lambda d: (
        f"Facilitator {d.facilitator_id} assigned" + (" (specialist)" if d.specialist else "")
    ),
    "rj.preparation-meeting.recorded": lambda d: f"Preparation meeting with {d.person_id} ({d.method})",
    "rj.risk-assessment.recorded": lambda d: (
        f"Risk assessed as {d.level}: " + ("safe to proceed" if d.safe_to_proceed else "not safe to proceed")
    ),
    "rj.consent.given": lambda d: f"{d.person_id} consented to {d.purpose}",
    "rj.consent.declined": lambda d: f"Consent to {d.purpose} declined",
    "rj.consent.withdrawn": lambda d: f"Consent to {d.purpose} withdrawn",
    "rj.case.ready-for-meeting": lambda d: "Ready for a meeting",
    "rj.case.readiness-lost": lambda d: "No longer ready for a meeting",
    "rj.case.withdrawn": lambda d: f"The case cannot proceed ({d.reason})",
    "rj.case.held": lambda d: "Put on hold for a safeguarding concern",
    "rj.case.resumed": lambda d: "Hold lifted",
    "rj.participant.added": lambda d: f"{d.participant.person_id} added as {d.participant.role}",
    "rj.contact.attempt-recorded": lambda d: f"Contact attempt to {d.person_id} by {d.method}: {d.outcome}",
    "rj.case.note-added": lambda d: "Case note added" + (f" about {d.person_id}" if d.person_id else ""),
    "rj.contact.safe-contact-recorded": lambda d: f"Safe-contact record for {d.person_id} updated",
    "rj.survey.invited": lambda d: f"{d.person_id} invited to the satisfaction survey",
    "rj.survey.response-recorded": lambda d: f"Survey answered by {d.person_id}: score {d.score} of 5",
    "rj.participant.erasure-due": lambda d: "A participant who declined is due to be erased",
    "rj.availability.recorded": lambda d: f"Availability recorded for {d.person_id}",
    "rj.meeting.proposed": lambda d: f"{d.kind.capitalize()} {d.meeting_id} proposed for {_when(d.starts_at)}",
    "rj.meeting.booked": lambda d: f"{d.kind.capitalize()} {d.meeting_id} booked for {_when(d.starts_at)}",
    "rj.meeting.rescheduled": lambda d: f"Meeting {d.meeting_id} moved to {_when(d.starts_at)}",
    "rj.meeting.cancelled": lambda d: f"Meeting {d.meeting_id} cancelled ({d.reason_code})",
    "rj.meeting.attendee-removed": lambda d: f"An attendee's place at meeting {d.meeting_id} was released",
    "rj.meeting.held": lambda d: f"Meeting {d.meeting_id} held",
    "rj.agreement.recorded": lambda d: f"Agreement recorded with {len(d.items)} items",
    "rj.reparation-payment.recorded": lambda d: (
        f"Payment of {_pounds(d.amount_pence)} towards item {d.item_id} "
        f"({_pounds(d.total_paid_pence)} of {_pounds(d.amount_due_pence)})"
    ),
    "rj.agreement-item.completed": lambda d: f"Agreement item {d.item_id} completed",
    "rj.agreement-item.due-soon": lambda d: f"Agreement item {d.item_id} due on {d.due_date}",
    "rj.agreement-item.overdue": lambda d: f"Agreement item {d.item_id} overdue since {d.due_date}",
    "rj.case.closed": lambda d: f"Case closed: {d.reason}",
    "rj.contact-form.switched": lambda d: f"Contact switched from {d.previous_form} to {d.form}",
    "rj.indirect.receiving-agreed": lambda d: f"{d.person_id} agreed to receive {', '.join(d.kinds)}",
    "rj.indirect.receiving-stopped": lambda d: f"{d.person_id} stopped receiving items ({d.reason_code})",
    "rj.indirect.item-submitted": lambda d: (
        f"{d.kind.capitalize()} {d.item_id} from {d.sender_id} for {d.recipient_id} awaits approval"
    ),
    "rj.indirect.item-approved": lambda d: f"Item {d.item_id} approved",
    "rj.indirect.item-rejected": lambda d: f"Item {d.item_id} rejected",
    "rj.indirect.item-released": lambda d: f"Item {d.item_id} released to {d.recipient_id}",
    "rj.indirect.item-withdrawn": lambda d: f"Item {d.item_id} withdrawn ({d.reason_code})",
    "rj.indirect.item-delivered": lambda d: f"Item {d.item_id} delivered to {d.recipient_id}",
    "rj.person.erased": lambda d: f"{d.erased_person_id}'s personal data erased",
    "rj.declined-participant.erased": lambda d: "A participant who declined was erased",
    "rj.retention-hold.placed": lambda d: f"Retention hold ({d.kind}) placed",
    "rj.retention-hold.lifted": lambda d: f"Retention hold ({d.kind}) lifted",
    "rj.case.retention-erased": lambda d: (
        f"Retention period ended: {len(d.people)} people's data erased"
        + (", and the case's own" if d.whole_case else "")
    ),
    "rj.participant.rectified": lambda d: f"{d.person_id}'s {d.field} corrected",
    "rj.notify.preferences-recorded": lambda d: f"Message preferences recorded for {d.person_id}",
    "rj.notification.scheduled": lambda d: (
        f"{_message(d)} scheduled for {_when(d.due_at)}" + (" (urgent)" if d.urgent else "")
    ),
    "rj.notification.sent": lambda d: f"{_message(d)} sent",
    "rj.notification.failed": lambda d: (
        f"{_message(d)} failed ({d.reason_code})" + (f"; trying {d.next_channel} next" if d.next_channel else "")
    ),
    "rj.notification.uncertain": lambda d: f"{_message(d)}: delivery uncertain (it is not sent again)",
    "rj.notification.cancelled": lambda d: f"{_message(d)} cancelled ({d.reason_code})",
    "rj.command.rejected": lambda d: f"{d.command_type} refused by {d.service}",
    "rj.command.already-handled": lambda d: f"{d.command_type} sent again; already handled",
    "rj.command.no-change": lambda d: f"{d.command_type} taken by {d.service}; it was already so, nothing changed",
    "rj.view.logged": lambda d: (
        f"{d.role.capitalize()} {d.viewer_id} viewed the {d.what}: {len(d.fields)} personal values"
        + (f" (reason: {d.reason})" if d.reason else "")
    ),
}


def summary_of(data: EventData) -> str:
    """One line for the timeline, from what the fact holds in clear; its sealed parts are kept beside it."""
    describe = _SUMMARIES.get(data.event_type)
    return describe(data) if describe is not None else data.event_type


def summarised_types() -> frozenset[str]:
    return frozenset(_SUMMARIES)
