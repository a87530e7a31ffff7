"""The API's read model: every fact on rj.referral, rj.consent, rj.scheduling, rj.notify and rj.privacy, and the view
log on rj.api, folded into schema ``api``, for the queries staff UIs ask (``services.api.queries``).

rj.referral, rj.consent, rj.scheduling, rj.notify, rj.privacy ──► take_in ──► api.cases, .participants, .consents,
    .meetings, .agreement_items, .deadlines, .indirect_items, .notifications, .contact_attempts, .notes, .timeline,
    .command_answers
    (+ pg_notify('rj_api_answers', command id), for whoever waits on a command's outcome)
    (+ for the service's figures, ``_FIGURES``: .survey_responses, .reoffences, and when a case was declined, a meeting
    held, RJ information given on time)
rj.api's rj.view.logged ──► api.timeline only (auditors see it there; it changes nothing about the case). The API's
    other facts on rj.api (participant-link settings) are written to its tables as they are decided, not folded.

The runtime opens sealed values before a handler sees a fact; what is personal is sealed again here, under the same
person's key on the same case, before it is written (so erasing a person erases it here too). Facts of different
topics arrive in any order: a case row is made by the first fact about it, and states only move forward
(``services.api.folding``). The projection decides nothing and publishes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import pydantic_core
from pydantic import BaseModel

from schemas.api import ViewLogged
from schemas.commands import CommandAlreadyHandled, CommandNoChange, CommandRejected
from schemas.consent import (
    CONSENT_EVENTS,
    CaseHeld,
    CaseNoteAdded,
    CaseReadinessLost,
    CaseReadyForMeeting,
    CaseResumed,
    CaseWithdrawn,
    ConsentDeclined,
    ConsentGiven,
    ConsentWithdrawn,
    ContactAttemptRecorded,
    FacilitatorAssigned,
    ParticipantAdded,
    PreparationStarted,
    RiskAssessmentRecorded,
    SurveyResponseRecorded,
)
from schemas.envelope import CloudEvent, EventData
from schemas.indirect import (
    INDIRECT_EVENTS,
    ContactFormSwitched,
    IndirectItemApproved,
    IndirectItemDelivered,
    IndirectItemRejected,
    IndirectItemReleased,
    IndirectItemSubmitted,
    IndirectItemWithdrawn,
)
from schemas.notify import (
    NOTIFY_EVENTS,
    NotificationCancelled,
    NotificationFailed,
    NotificationScheduled,
    NotificationSent,
    NotificationUncertain,
)
from schemas.privacy import PRIVACY_EVENTS, CaseRetentionErased, ParticipantRectified, PersonErased
from schemas.referral import (
    REFERRAL_EVENTS,
    CaseAccepted,
    CaseDeclined,
    CaseOpened,
    CaseParticipant,
    OffenderJoined,
    Participant,
    ReoffenceRecorded,
    VictimInformationDue,
    VictimInformationOverdue,
    VictimInformationProvided,
    VictimSupportReferralDue,
    VictimSupportReferralOverdue,
    VictimSupportReferralRecorded,
)
from schemas.scheduling import (
    SCHEDULING_EVENTS,
    AgreementItemCompleted,
    AgreementItemDueSoon,
    AgreementItemOverdue,
    AgreementRecorded,
    CaseClosed,
    FacilitatorRegistered,
    MeetingBooked,
    MeetingCancelled,
    MeetingHeld,
    MeetingProposed,
    MeetingRescheduled,
    PaymentRecorded,
    VenueRegistered,
)
from services.api import folding
from services.api.folding import (
    DEADLINE_STATE_RANK,
    INDIRECT_STATE_RANK,
    ITEM_STATE_RANK,
    MEETING_STATUS_RANK,
    NOTIFICATION_STATE_RANK,
    case_status_after,
    rank_sql,
)
from services.runtime import privacy
from services.runtime.outbox import Outgoing

Event = CloudEvent[Any]

ANSWERS_CHANNEL = "rj_api_answers"
"""Notified with a command's id, in the transaction that records an answer to it (the HTTP layer long-polls it)."""

_FACT_MODELS: tuple[type[EventData], ...] = (
    *REFERRAL_EVENTS,
    *CONSENT_EVENTS,
    *SCHEDULING_EVENTS,
    *INDIRECT_EVENTS,
    *NOTIFY_EVENTS,
    *PRIVACY_EVENTS,
    CommandRejected,
    CommandAlreadyHandled,
    CommandNoChange,
    ViewLogged,
)
CONSUMES: frozenset[str] = frozenset(model.event_type for model in _FACT_MODELS)
"""Every fact type published on the topics the API reads: each service's facts and its answers to commands, and
the API's own view log."""

REGISTRATIONS = (FacilitatorRegistered, VenueRegistered)
"""Facts about a facilitator or a venue, not a case: kept beside the cases, not in any case's timeline."""

ANSWERS_ONLY = (CommandRejected, CommandAlreadyHandled, CommandNoChange)
"""Facts that never make a case: a command refused for a case that does not exist must not bring it into being."""

TIMELINE_ONLY = (ViewLogged,)
"""Facts about who looked at a case, not about the case: in its timeline, and nowhere else. Looking neither makes a
case nor moves it up the list (its ``updated_at``), and answers no command."""


async def take_in(conn: asyncpg.Connection, events: Sequence[Event]) -> list[Outgoing]:
    """Fold a batch of facts, in order, into the read model. Publishes nothing.

    What every fact writes the same way is written for the batch at once: the cases' rows and the timeline first
    (``_touch_cases``, ``_record_in_timelines``), the commands' answers last (``Answers``); what each fact means, in
    order, between."""
    await _touch_cases(conn, events)
    await _record_in_timelines(conn, events)
    answers = Answers()
    for event in events:
        await fold(conn, event, answers)
    await answers.flush(conn)
    return []


async def fold(conn: asyncpg.Connection, event: Event, answers: Answers) -> None:
    """Fold one fact whose cases' rows and timeline entries are written already; its answer goes into
    ``answers``."""
    data = event.data
    apply = _APPLY.get(type(data))
    if isinstance(data, REGISTRATIONS):  # about a facilitator or a venue, not a case; still a command's answer
        if apply is not None:
            await apply(conn, event, data)
        answers.add(event)
        return
    if isinstance(data, TIMELINE_ONLY):
        return
    case_ids = _cases_of(data)
    if apply is not None and case_ids:
        await apply(conn, event, data)
    if (for_figures := _FIGURES.get(type(data))) is not None and case_ids:
        await for_figures(conn, event, data)
    answers.add(event)
    if isinstance(data, CaseClosed) and data.closed_by.kind == "staff":
        await answers.flush(conn)  # it looks for the staff's command no answer names yet
        await _answer_staff_closure(conn, event, data)


def _cases_of(data: EventData) -> list[str]:
    if isinstance(data, PersonErased):
        return sorted(set(data.cases) | ({data.case_id} if data.case_id else set()))
    case_id = getattr(data, "case_id", None)
    return [case_id] if isinstance(case_id, str) and case_id else []


# --- what every case fact does ---------------------------------------------------------------------------


async def _touch_cases(conn: asyncpg.Connection, events: Sequence[Event]) -> None:
    """Make each case's row if this is the first fact about it (in whatever order they came), learn its force (the
    first a fact names) and move it up the list (``updated_at``, the latest fact's time): for every fact that makes
    a case, in one statement. Looking at a case (the view log), a command's answer alone and a registration do
    not."""
    cases: dict[str, tuple[str | None, datetime]] = {}
    for event in events:
        if isinstance(event.data, (*REGISTRATIONS, *TIMELINE_ONLY, *ANSWERS_ONLY)):
            continue
        force = event.force or getattr(event.data, "force", None)
        for case_id in _cases_of(event.data):
            known, latest = cases.get(case_id, (None, event.time))
            cases[case_id] = (known or force, max(latest, event.time))
    if not cases:
        return
    ordered = sorted(cases)
    await conn.execute(
        """INSERT INTO api.cases AS c (case_id, force, updated_at)
           SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[])
           ON CONFLICT (case_id) DO UPDATE SET force = COALESCE(c.force, EXCLUDED.force),
                                               updated_at = GREATEST(c.updated_at, EXCLUDED.updated_at)""",
        ordered,
        [cases[c][0] for c in ordered],
        [cases[c][1] for c in ordered],
    )


async def _record_in_timelines(conn: asyncpg.Connection, events: Sequence[Event]) -> None:
    """Each fact in its cases' timelines (a registration is about no case), its personal values sealed under their
    owners' keys on the case. The keys that takes are loaded in one round trip, and they are the ones the
    participants' details sealed fact by fact in ``fold`` use, so those need none of their own. Nothing in a batch
    reads the timeline: it is written first."""
    entries = [(e, case_id) for e in events if not isinstance(e.data, REGISTRATIONS) for case_id in _cases_of(e.data)]
    if not entries:
        return
    documents = await privacy.batch().seal_each(
        conn, [(type(e.data), e.data.model_dump(mode="json"), case_id) for e, case_id in entries], owned=True
    )
    await conn.execute(
        """INSERT INTO api.timeline (event_id, case_id, at, event_type, actor, summary, fact)
           SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::text[],
                                $7::jsonb[])
           ON CONFLICT (event_id) DO NOTHING""",
        [e.id if len(_cases_of(e.data)) < 2 else f"{e.id}:{case_id}" for e, case_id in entries],
        [case_id for _, case_id in entries],
        [e.time for e, _ in entries],
        [e.type for e, _ in entries],
        [folding.actor_of(document) for document in documents],
        [folding.summary_of(e.data) for e, _ in entries],
        [_json(document) for document in documents],
    )


@dataclass
class Answers:
    """A batch's answers to commands, written together (``flush``): only a staff closure reads them (it flushes
    them first)."""

    pending: list[tuple[folding.CommandAnswer, Event]] = field(default_factory=list)

    def add(self, event: Event) -> None:
        if (answer := folding.answer_of(event)) is not None:
            self.pending.append((answer, event))

    async def flush(self, conn: asyncpg.Connection) -> None:
        """The commands' answers not recorded before, and each answered command's waiters woken."""
        if not self.pending:
            return
        answers, self.pending = self.pending, []
        rows = await conn.fetch(
            """INSERT INTO api.command_answers (command_id, event_id, case_id, event_type, status, reason, at)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                                    $7::timestamptz[])
               ON CONFLICT (event_id) DO NOTHING RETURNING command_id""",
            [a.command_id for a, _ in answers],
            [e.id for _, e in answers],
            [getattr(e.data, "case_id", None) or e.subject for _, e in answers],
            [e.type for _, e in answers],
            [a.status for a, _ in answers],
            [a.reason for a, _ in answers],
            [e.time for _, e in answers],
        )
        if rows:
            await conn.execute(
                "SELECT pg_notify($1, c) FROM unnest($2::text[]) AS c", ANSWERS_CHANNEL, [r[0] for r in rows]
            )


async def _answer_staff_closure(conn: asyncpg.Connection, event: Event, data: CaseClosed) -> None:
    """``rj.case.closed`` is participant-facing: no ``causationid`` leads from it to the command that closed the case.
    A closure by staff answers that member of staff's ``rj.case.close`` sent through this API for the case, which no
    other fact answers; the earliest such command not answered yet (a later one is rejected: the case is closed)."""
    command_id = await conn.fetchval(
        """SELECT s.command_id FROM api.commands_sent s
            WHERE s.case_id = $1 AND s.command_type = 'rj.case.close' AND s.staff_id = $2
              AND NOT EXISTS (SELECT 1 FROM api.command_answers a WHERE a.command_id = s.command_id)
            ORDER BY s.sent_at LIMIT 1""",
        data.case_id,
        data.closed_by.id,
    )
    if command_id is None:
        return
    written = await conn.fetchval(
        """INSERT INTO api.command_answers (command_id, event_id, case_id, event_type, status, reason, at)
           VALUES ($1, $2, $3, $4, 'accepted', NULL, $5) ON CONFLICT (event_id) DO NOTHING RETURNING command_id""",
        command_id,
        event.id,
        data.case_id,
        event.type,
        event.time,
    )
    if written is not None:
        await conn.execute("SELECT pg_notify($1, $2)", ANSWERS_CHANNEL, command_id)


async def sealed(conn: asyncpg.Connection, data: BaseModel, case_id: str) -> dict[str, Any]:
    """``data`` as a JSON document with its personal values sealed again, under their owners' keys on the case."""
    [document] = await privacy.batch().seal_documents(conn, type(data), [(data.model_dump(mode="json"), case_id)])
    return document


def _json(document: Any) -> str:
    return pydantic_core.to_json(document).decode()


# --- referral ------------------------------------------------------------------------------------------------


async def _set_status(conn: asyncpg.Connection, case_id: str, status: str, *, readiness_lost: bool = False) -> None:
    current = await conn.fetchval("SELECT status FROM api.cases WHERE case_id = $1 FOR UPDATE", case_id)
    after = case_status_after(current, status, readiness_lost=readiness_lost)
    if after != current:
        await conn.execute("UPDATE api.cases SET status = $2 WHERE case_id = $1", case_id, after)


async def _case_opened(conn: asyncpg.Connection, event: Event, data: CaseOpened) -> None:
    await conn.execute(
        """UPDATE api.cases SET crime_reference = $2, opened_at = $3, referral = $4, offence_category = $5
           WHERE case_id = $1""",
        data.case_id,
        data.crime_reference,
        data.opened_at,
        data.referral,
        data.offence.category,
    )
    await _set_status(conn, data.case_id, "referred")
    for participant in data.participants:
        await _participant_details(conn, data.case_id, participant, data.opened_at)


async def _participant_details(conn: asyncpg.Connection, case_id: str, person: Participant, at: datetime) -> None:
    """A participant as upstream described them: their personal details kept sealed, the rest in clear."""
    details = await sealed(conn, person, case_id)
    await conn.execute(
        """INSERT INTO api.participants AS p (case_id, person_id, role, required, in_custody, enhanced_rights,
                                              vulnerable, preferred_channel, details, added_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10)
           ON CONFLICT (case_id, person_id) DO UPDATE SET
               role = EXCLUDED.role, required = COALESCE(p.required, EXCLUDED.required),
               in_custody = EXCLUDED.in_custody, enhanced_rights = EXCLUDED.enhanced_rights,
               vulnerable = EXCLUDED.vulnerable, preferred_channel = EXCLUDED.preferred_channel,
               details = EXCLUDED.details, added_at = LEAST(p.added_at, EXCLUDED.added_at)""",
        case_id,
        person.person_id,
        person.role.value,
        person.required,
        person.in_custody,
        person.enhanced_rights,
        person.vulnerable,
        person.preferred_channel.value if person.preferred_channel else None,
        _json(details),
        at,
    )


async def _case_participant(conn: asyncpg.Connection, case_id: str, person: CaseParticipant, at: datetime) -> None:
    """Who takes part, as the case's services know them (no personal data): what the consent service decided
    about them (required, under 18, whom they support) is the newest word."""
    await conn.execute(
        """INSERT INTO api.participants AS p (case_id, person_id, role, required, supports, under_18, in_custody,
                                              language, added_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
           ON CONFLICT (case_id, person_id) DO UPDATE SET
               role = EXCLUDED.role, required = EXCLUDED.required, supports = EXCLUDED.supports,
               under_18 = EXCLUDED.under_18, in_custody = EXCLUDED.in_custody, language = EXCLUDED.language,
               added_at = LEAST(p.added_at, EXCLUDED.added_at)""",
        case_id,
        person.person_id,
        person.role.value,
        person.required,
        person.supports,
        person.under_18,
        person.in_custody,
        person.language,
        at,
    )


async def _case_accepted(conn: asyncpg.Connection, event: Event, data: CaseAccepted) -> None:
    await conn.execute(
        """UPDATE api.cases SET crime_reference = COALESCE(crime_reference, $2), specialist_required = $3,
                  risk_assessment_required = $4, sensitivity_reasons = $5::text[],
                  sensitive = $6 WHERE case_id = $1""",
        data.case_id,
        data.crime_reference,
        data.specialist_required,
        data.risk_assessment_required,
        [r.value for r in data.sensitivity_reasons],
        bool(data.sensitivity_reasons) or data.specialist_required,
    )
    await _set_status(conn, data.case_id, "accepted")
    for person in data.participants:
        await _case_participant(conn, data.case_id, person, data.decided_at)


async def _case_declined(conn: asyncpg.Connection, event: Event, data: CaseDeclined) -> None:
    await conn.execute(
        "UPDATE api.cases SET crime_reference = COALESCE(crime_reference, $2) WHERE case_id = $1",
        data.case_id,
        data.crime_reference,
    )
    await _set_status(conn, data.case_id, "declined")


async def _offender_joined(conn: asyncpg.Connection, event: Event, data: OffenderJoined) -> None:
    await _participant_details(conn, data.case_id, data.details, data.joined_at)
    await _case_participant(conn, data.case_id, data.participant, data.joined_at)


async def _deadline(
    conn: asyncpg.Connection,
    case_id: str,
    kind: str,
    subject_id: str,
    state: str,
    at: datetime,
    *,
    due_by: datetime | None = None,
    due_date: Any = None,
) -> None:
    """A deadline moves only forward: due, breached, met (met late is still met; a late "due" changes nothing)."""
    rank = rank_sql("d.state", DEADLINE_STATE_RANK)
    await conn.execute(
        f"""INSERT INTO api.deadlines AS d (case_id, kind, subject_id, due_by, due_date, state, changed_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            ON CONFLICT (case_id, kind, subject_id) DO UPDATE SET
                due_by = COALESCE(EXCLUDED.due_by, d.due_by), due_date = COALESCE(EXCLUDED.due_date, d.due_date),
                state = CASE WHEN $8 >= {rank} THEN EXCLUDED.state ELSE d.state END,
                changed_at = CASE WHEN $8 >= {rank} THEN EXCLUDED.changed_at ELSE d.changed_at END""",
        case_id,
        kind,
        subject_id,
        due_by,
        due_date,
        state,
        at,
        DEADLINE_STATE_RANK[state],
    )


async def _information_due(conn: asyncpg.Connection, event: Event, data: VictimInformationDue) -> None:
    await _deadline(
        conn, data.case_id, "victim_information", data.person_id, "due", event.time,
        due_by=data.due_by, due_date=data.due_date,
    )  # fmt: skip


async def _information_provided(conn: asyncpg.Connection, event: Event, data: VictimInformationProvided) -> None:
    await _deadline(conn, data.case_id, "victim_information", data.person_id, "met", data.provided_at)


async def _information_overdue(conn: asyncpg.Connection, event: Event, data: VictimInformationOverdue) -> None:
    await _deadline(
        conn, data.case_id, "victim_information", data.person_id, "breached", data.flagged_at, due_by=data.due_by
    )


async def _support_due(conn: asyncpg.Connection, event: Event, data: VictimSupportReferralDue) -> None:
    await _deadline(
        conn, data.case_id, "victim_support_referral", data.person_id, "due", event.time,
        due_by=data.due_by, due_date=data.due_date,
    )  # fmt: skip


async def _support_recorded(conn: asyncpg.Connection, event: Event, data: VictimSupportReferralRecorded) -> None:
    await _deadline(conn, data.case_id, "victim_support_referral", data.person_id, "met", data.recorded_at)


async def _support_overdue(conn: asyncpg.Connection, event: Event, data: VictimSupportReferralOverdue) -> None:
    await _deadline(
        conn, data.case_id, "victim_support_referral", data.person_id, "breached", data.flagged_at,
        due_by=data.due_by,
    )  # fmt: skip


# --- consent -------------------------------------------------------------------------------------------------


async def _preparation_started(conn: asyncpg.Connection, event: Event, data: PreparationStarted) -> None:
    await conn.execute(
        """UPDATE api.cases SET specialist_required = $2, risk_assessment_required = $3,
                  sensitive = sensitive OR $2 WHERE case_id = $1""",
        data.case_id,
        data.specialist_required,
        data.risk_assessment_required,
    )
    await _set_status(conn, data.case_id, "preparation")
    for person in data.participants:
        await _case_participant(conn, data.case_id, person, data.started_at)


async def _facilitator_assigned(conn: asyncpg.Connection, event: Event, data: FacilitatorAssigned) -> None:
    await conn.execute(
        """INSERT INTO api.case_facilitators (case_id, facilitator_id, specialist, assigned_at) VALUES ($1, $2, $3, $4)
           ON CONFLICT (case_id, facilitator_id) DO UPDATE SET specialist = EXCLUDED.specialist""",
        data.case_id,
        data.facilitator_id,
        data.specialist,
        data.assigned_at,
    )


async def _risk_assessed(conn: asyncpg.Connection, event: Event, data: RiskAssessmentRecorded) -> None:
    """The latest assessment (by when it was made) is the one that counts, as the consent service counts it."""
    await conn.execute(
        """UPDATE api.cases SET risk_level = $2, safe_to_proceed = $3, risk_assessed_at = $4
           WHERE case_id = $1 AND (risk_assessed_at IS NULL OR risk_assessed_at <= $4)""",
        data.case_id,
        data.level.value,
        data.safe_to_proceed,
        data.assessed_at,
    )


async def _consent(
    conn: asyncpg.Connection, event: Event, data: ConsentGiven | ConsentDeclined | ConsentWithdrawn
) -> None:
    """Every decision is kept. Who gave consent is in clear (as on the fact); who declined or withdrew is sealed
    under the case's key, as on the fact, and stays out of the plain columns."""
    if isinstance(data, ConsentGiven):
        decision, person_id, decided_at = "given", data.person_id, data.given_at
    elif isinstance(data, ConsentDeclined):
        decision, person_id, decided_at = "declined", None, data.declined_at
    else:
        decision, person_id, decided_at = "withdrawn", None, data.withdrawn_at
    await conn.execute(
        """INSERT INTO api.consents (event_id, case_id, person_id, purpose, decision, decided_at, recorded_at, through,
                                     method, fact)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb) ON CONFLICT (event_id) DO NOTHING""",
        event.id,
        data.case_id,
        person_id,
        data.purpose,
        decision,
        decided_at,
        data.recorded_at,
        data.through.value,
        data.method.value,
        _json(await sealed(conn, data, data.case_id)),
    )


async def _ready(conn: asyncpg.Connection, event: Event, data: CaseReadyForMeeting) -> None:
    await _set_status(conn, data.case_id, "ready")
    for person in data.participants:
        await _case_participant(conn, data.case_id, person, data.ready_at)


async def _readiness_lost(conn: asyncpg.Connection, event: Event, data: CaseReadinessLost) -> None:
    await _set_status(conn, data.case_id, "preparation", readiness_lost=True)


async def _case_withdrawn(conn: asyncpg.Connection, event: Event, data: CaseWithdrawn) -> None:
    await _set_status(conn, data.case_id, "withdrawn")


async def _held(conn: asyncpg.Connection, event: Event, data: CaseHeld) -> None:
    await conn.execute(
        """UPDATE api.cases SET on_hold = true, hold_changed_at = $2, hold = $3::jsonb
           WHERE case_id = $1 AND (hold_changed_at IS NULL OR hold_changed_at <= $2)""",
        data.case_id,
        data.held_at,
        _json(await sealed(conn, data, data.case_id)),
    )


async def _resumed(conn: asyncpg.Connection, event: Event, data: CaseResumed) -> None:
    await conn.execute(
        """UPDATE api.cases SET on_hold = false, hold_changed_at = $2, hold = NULL
           WHERE case_id = $1 AND (hold_changed_at IS NULL OR hold_changed_at <= $2)""",
        data.case_id,
        data.resumed_at,
    )


async def _participant_added(conn: asyncpg.Connection, event: Event, data: ParticipantAdded) -> None:
    await _case_participant(conn, data.case_id, data.participant, data.added_at)


async def _contact_attempt(conn: asyncpg.Connection, event: Event, data: ContactAttemptRecorded) -> None:
    await conn.execute(
        """INSERT INTO api.contact_attempts (event_id, case_id, person_id, attempted_at, method, outcome, fact)
           VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb) ON CONFLICT (event_id) DO NOTHING""",
        event.id,
        data.case_id,
        data.person_id,
        data.attempted_at,
        data.method.value,
        data.outcome.value,
        _json(await sealed(conn, data, data.case_id)),
    )


async def _note_added(conn: asyncpg.Connection, event: Event, data: CaseNoteAdded) -> None:
    await conn.execute(
        """INSERT INTO api.notes (event_id, case_id, note_id, person_id, added_at, added_by, fact)
           VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb) ON CONFLICT (event_id) DO NOTHING""",
        event.id,
        data.case_id,
        data.note_id,
        data.person_id,
        data.added_at,
        f"{data.added_by.kind}:{data.added_by.id}",
        _json(await sealed(conn, data, data.case_id)),
    )


# --- scheduling -----------------------------------------------------------------------------------------------


_PLAN_COLUMNS = (
    "kind", "starts_at", "ends_at", "lead_facilitator_id", "facilitator_ids", "venue_id", "visit_slot",
    "attendee_ids", "planned_at",
)  # fmt: skip
_NEWER_PLAN = "(m.planned_at IS NULL OR m.planned_at <= EXCLUDED.planned_at)"


async def _meeting_planned(
    conn: asyncpg.Connection, event: Event, data: MeetingProposed | MeetingBooked | MeetingRescheduled
) -> None:
    """The newest plan is the one shown, even of a meeting already held or cancelled (its facts may have overtaken
    the booking); the status only moves forward (a proposal never undoes a booking, nothing undoes a cancellation)."""
    status = "proposed" if isinstance(data, MeetingProposed) else "booked"
    rank = rank_sql("m.status", MEETING_STATUS_RANK)
    plan = ", ".join(f"{c} = CASE WHEN {_NEWER_PLAN} THEN EXCLUDED.{c} ELSE m.{c} END" for c in _PLAN_COLUMNS)
    await conn.execute(
        f"""INSERT INTO api.meetings AS m (case_id, meeting_id, kind, status, starts_at, ends_at, lead_facilitator_id,
                                          facilitator_ids, venue_id, visit_slot, attendee_ids, planned_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text[], $9, $10, $11::text[], $12)
            ON CONFLICT (case_id, meeting_id) DO UPDATE SET {plan},
                status = CASE WHEN $13 >= {rank} THEN EXCLUDED.status ELSE m.status END""",
        data.case_id,
        data.meeting_id,
        data.kind.value,
        status,
        data.starts_at,
        data.ends_at,
        data.lead_facilitator_id,
        data.facilitator_ids,
        data.venue_id,
        data.visit_slot,
        data.attendee_ids,
        event.time,
        MEETING_STATUS_RANK[status],
    )


async def _meeting_status(
    conn: asyncpg.Connection, case_id: str, meeting_id: str, status: str, *, reason: str | None = None
) -> None:
    rank = rank_sql("m.status", MEETING_STATUS_RANK)
    await conn.execute(
        f"""INSERT INTO api.meetings AS m (case_id, meeting_id, status, cancellation_reason) VALUES ($1, $2, $3, $4)
            ON CONFLICT (case_id, meeting_id) DO UPDATE SET status = EXCLUDED.status,
                cancellation_reason = COALESCE(EXCLUDED.cancellation_reason, m.cancellation_reason)
            WHERE $5 >= {rank}""",
        case_id,
        meeting_id,
        status,
        reason,
        MEETING_STATUS_RANK[status],
    )


async def _meeting_cancelled(conn: asyncpg.Connection, event: Event, data: MeetingCancelled) -> None:
    await _meeting_status(conn, data.case_id, data.meeting_id, "cancelled", reason=data.reason_code.value)


async def _meeting_held(conn: asyncpg.Connection, event: Event, data: MeetingHeld) -> None:
    await _meeting_status(conn, data.case_id, data.meeting_id, "held")


async def _agreement(conn: asyncpg.Connection, event: Event, data: AgreementRecorded) -> None:
    for item in data.items:
        terms = await sealed(conn, item, data.case_id)
        await conn.execute(
            """INSERT INTO api.agreement_items AS i (case_id, item_id, meeting_id, kind, owner_id, due_date,
                                                     amount_pence, state, terms)
               VALUES ($1, $2, $3, $4, $5, $6, $7, 'open', $8::jsonb)
               ON CONFLICT (case_id, item_id) DO UPDATE SET meeting_id = EXCLUDED.meeting_id, kind = EXCLUDED.kind,
                   owner_id = EXCLUDED.owner_id, due_date = EXCLUDED.due_date, amount_pence = EXCLUDED.amount_pence,
                   terms = EXCLUDED.terms""",
            data.case_id,
            item.item_id,
            data.meeting_id,
            item.kind.value,
            item.owner_id,
            item.due_date,
            item.amount_pence,
            _json(terms),
        )
        await _deadline(conn, data.case_id, "agreement_item", item.item_id, "due", event.time, due_date=item.due_date)


async def _item_state(
    conn: asyncpg.Connection, case_id: str, item_id: str, state: str, *, kind: str | None = None, at: datetime
) -> None:
    rank = rank_sql("i.state", ITEM_STATE_RANK)
    await conn.execute(
        f"""INSERT INTO api.agreement_items AS i (case_id, item_id, kind, state, completed_at)
            VALUES ($1, $2, $3, $4, CASE WHEN $4 = 'completed' THEN $5::timestamptz END)
            ON CONFLICT (case_id, item_id) DO UPDATE SET state = EXCLUDED.state,
                completed_at = COALESCE(EXCLUDED.completed_at, i.completed_at), kind = COALESCE(i.kind, EXCLUDED.kind)
            WHERE $6 >= {rank}""",
        case_id,
        item_id,
        kind,
        state,
        at,
        ITEM_STATE_RANK[state],
    )


async def _payment(conn: asyncpg.Connection, event: Event, data: PaymentRecorded) -> None:
    await conn.execute(
        """INSERT INTO api.agreement_items AS i (case_id, item_id, state, amount_pence, paid_pence)
           VALUES ($1, $2, 'open', $3, $4)
           ON CONFLICT (case_id, item_id) DO UPDATE SET paid_pence = GREATEST(i.paid_pence, EXCLUDED.paid_pence),
               amount_pence = COALESCE(i.amount_pence, EXCLUDED.amount_pence)""",
        data.case_id,
        data.item_id,
        data.amount_due_pence,
        data.total_paid_pence,
    )


async def _item_completed(conn: asyncpg.Connection, event: Event, data: AgreementItemCompleted) -> None:
    await _item_state(conn, data.case_id, data.item_id, "completed", kind=data.kind.value, at=data.completed_at)
    await _deadline(conn, data.case_id, "agreement_item", data.item_id, "met", data.completed_at)


async def _item_due_soon(conn: asyncpg.Connection, event: Event, data: AgreementItemDueSoon) -> None:
    await _item_state(conn, data.case_id, data.item_id, "due_soon", kind=data.kind.value, at=data.flagged_at)
    await _deadline(conn, data.case_id, "agreement_item", data.item_id, "due", data.flagged_at, due_date=data.due_date)


async def _item_overdue(conn: asyncpg.Connection, event: Event, data: AgreementItemOverdue) -> None:
    await _item_state(conn, data.case_id, data.item_id, "overdue", kind=data.kind.value, at=data.flagged_at)
    await _deadline(
        conn, data.case_id, "agreement_item", data.item_id, "breached", data.flagged_at, due_date=data.due_date
    )


async def _case_closed(conn: asyncpg.Connection, event: Event, data: CaseClosed) -> None:
    await conn.execute(
        "UPDATE api.cases SET closure_reason = $2, closed_at = $3 WHERE case_id = $1",
        data.case_id,
        data.reason.value,
        data.closed_at,
    )
    await _set_status(conn, data.case_id, "closed")


async def _contact_form(conn: asyncpg.Connection, event: Event, data: ContactFormSwitched) -> None:
    await conn.execute(
        """UPDATE api.cases SET contact_form = $2, contact_form_changed_at = $3
           WHERE case_id = $1 AND (contact_form_changed_at IS NULL OR contact_form_changed_at <= $3)""",
        data.case_id,
        data.form.value,
        data.switched_at,
    )


async def _indirect_state(
    conn: asyncpg.Connection,
    event: Event,
    case_id: str,
    item_id: str,
    state: str,
    *,
    submitted: IndirectItemSubmitted | None = None,
    recipient_id: str | None = None,
) -> None:
    rank = rank_sql("i.state", INDIRECT_STATE_RANK)
    submission = _json(await sealed(conn, submitted, case_id)) if submitted is not None else None
    await conn.execute(
        f"""INSERT INTO api.indirect_items AS i (case_id, item_id, sender_id, recipient_id, kind, state, submitted_at,
                                                changed_at, submission)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb)
            ON CONFLICT (case_id, item_id) DO UPDATE SET
                sender_id = COALESCE(i.sender_id, EXCLUDED.sender_id),
                recipient_id = COALESCE(i.recipient_id, EXCLUDED.recipient_id),
                kind = COALESCE(i.kind, EXCLUDED.kind), submitted_at = COALESCE(i.submitted_at, EXCLUDED.submitted_at),
                submission = COALESCE(i.submission, EXCLUDED.submission),
                state = CASE WHEN $10 >= {rank} THEN EXCLUDED.state ELSE i.state END,
                changed_at = CASE WHEN $10 >= {rank} THEN EXCLUDED.changed_at ELSE i.changed_at END""",
        case_id,
        item_id,
        submitted.sender_id if submitted else None,
        submitted.recipient_id if submitted else recipient_id,
        submitted.kind.value if submitted else None,
        state,
        submitted.submitted_at if submitted else None,
        event.time,
        submission,
        INDIRECT_STATE_RANK[state],
    )


async def _item_submitted(conn: asyncpg.Connection, event: Event, data: IndirectItemSubmitted) -> None:
    await _indirect_state(conn, event, data.case_id, data.item_id, "submitted", submitted=data)


async def _item_approved(conn: asyncpg.Connection, event: Event, data: IndirectItemApproved) -> None:
    await _indirect_state(conn, event, data.case_id, data.item_id, "approved")


async def _item_rejected(conn: asyncpg.Connection, event: Event, data: IndirectItemRejected) -> None:
    await _indirect_state(conn, event, data.case_id, data.item_id, "rejected")


async def _item_released(conn: asyncpg.Connection, event: Event, data: IndirectItemReleased) -> None:
    await _indirect_state(conn, event, data.case_id, data.item_id, "released", recipient_id=data.recipient_id)


async def _item_withdrawn(conn: asyncpg.Connection, event: Event, data: IndirectItemWithdrawn) -> None:
    await _indirect_state(conn, event, data.case_id, data.item_id, "withdrawn")


async def _item_delivered(conn: asyncpg.Connection, event: Event, data: IndirectItemDelivered) -> None:
    await _indirect_state(conn, event, data.case_id, data.item_id, "delivered", recipient_id=data.recipient_id)


async def _facilitator_registered(conn: asyncpg.Connection, event: Event, data: FacilitatorRegistered) -> None:
    await conn.execute(
        """INSERT INTO api.facilitators AS f (facilitator_id, specialist, registered_at) VALUES ($1, $2, $3)
           ON CONFLICT (facilitator_id) DO UPDATE SET specialist = EXCLUDED.specialist,
               registered_at = EXCLUDED.registered_at WHERE f.registered_at <= EXCLUDED.registered_at""",
        data.facilitator_id,
        data.specialist,
        data.registered_at,
    )


async def _venue_registered(conn: asyncpg.Connection, event: Event, data: VenueRegistered) -> None:
    await conn.execute(
        """INSERT INTO api.venues AS v (venue_id, kind, name, registered_at) VALUES ($1, $2, $3, $4)
           ON CONFLICT (venue_id) DO UPDATE SET kind = EXCLUDED.kind, name = EXCLUDED.name,
               registered_at = EXCLUDED.registered_at WHERE v.registered_at <= EXCLUDED.registered_at""",
        data.venue_id,
        data.kind.value,
        data.name,
        data.registered_at,
    )


# --- notify -----------------------------------------------------------------------------------------------------

NotificationFact = (
    NotificationScheduled | NotificationSent | NotificationFailed | NotificationUncertain | NotificationCancelled
)


def _notification_state(data: NotificationFact) -> tuple[str, datetime, str | None]:
    """The state a notification fact says, when it was decided, and why (a failure's or a cancellation's code)."""
    if isinstance(data, NotificationScheduled):
        return "scheduled", data.scheduled_at, None
    if isinstance(data, NotificationSent):
        return "sent", data.sent_at, None
    if isinstance(data, NotificationFailed):
        return "failed", data.failed_at, data.reason_code.value
    if isinstance(data, NotificationUncertain):
        return "uncertain", data.found_at, None
    return "cancelled", data.cancelled_at, data.reason_code.value


async def _notification(conn: asyncpg.Connection, event: Event, data: NotificationFact) -> None:
    """A notification at its latest state, made by whichever of its facts comes first. The state (with its time,
    reason and next channel) moves only forward by ``NOTIFICATION_STATE_RANK``; what only one fact says (when it is
    due, on the scheduled fact) is filled in whenever that fact comes. Whom it went to stays sealed, as on the fact
    (under the case's key): only ``recipient`` holds it."""
    state, at, reason = _notification_state(data)
    recipient = await sealed(conn, data, data.case_id)
    rank = rank_sql("n.state", NOTIFICATION_STATE_RANK)
    forward = f"$12 > {rank} OR ($12 = {rank} AND EXCLUDED.updated_at >= n.updated_at)"
    await conn.execute(
        f"""INSERT INTO api.notifications AS n (case_id, notification_id, kind, recipient_kind, recipient, channel,
                                               due_at, state, reason_code, next_channel, updated_at)
            VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10, $11)
            ON CONFLICT (case_id, notification_id) DO UPDATE SET
                channel = COALESCE(n.channel, EXCLUDED.channel),
                due_at = COALESCE(EXCLUDED.due_at, n.due_at),
                state = CASE WHEN {forward} THEN EXCLUDED.state ELSE n.state END,
                reason_code = CASE WHEN {forward} THEN EXCLUDED.reason_code ELSE n.reason_code END,
                next_channel = CASE WHEN {forward} THEN EXCLUDED.next_channel ELSE n.next_channel END,
                updated_at = CASE WHEN {forward} THEN EXCLUDED.updated_at ELSE n.updated_at END""",
        data.case_id,
        data.notification_id,
        data.kind.value,
        data.recipient_kind.value,
        _json({"recipient_id": recipient["recipient_id"]}),
        data.channel.value if data.channel else None,
        data.due_at if isinstance(data, NotificationScheduled) else None,
        state,
        reason,
        data.next_channel.value if isinstance(data, NotificationFailed) and data.next_channel else None,
        at,
        NOTIFICATION_STATE_RANK[state],
    )


# --- privacy ---------------------------------------------------------------------------------------------------


async def _person_erased(conn: asyncpg.Connection, event: Event, data: PersonErased) -> None:
    """Their sealed values already read as erased (their keys are gone); the flag says so without opening them.
    A case kept under a retention hold keeps them."""
    kept = set(data.kept_under_hold)
    erased_on = [c for c in _cases_of(data) if c not in kept]
    await conn.execute(
        "UPDATE api.participants SET erased = true WHERE person_id = $1 AND case_id = ANY($2::text[])",
        data.erased_person_id,
        erased_on,
    )


async def _retention_erased(conn: asyncpg.Connection, event: Event, data: CaseRetentionErased) -> None:
    await conn.execute(
        "UPDATE api.participants SET erased = true WHERE case_id = $1 AND person_id = ANY($2::text[])",
        data.case_id,
        [p.person_id for p in data.people],
    )


async def _rectified(conn: asyncpg.Connection, event: Event, data: ParticipantRectified) -> None:
    """A correction supersedes what upstream said of that field; kept beside it, sealed as the person's own (a
    later ``rj.case.opened`` replayed or overtaken does not undo it)."""
    if data.field not in Participant.model_fields or data.field in ("person_id", "role", "required"):
        return  # the timeline keeps it; nothing in the participant's record to correct
    value = data.model_dump(mode="json")["value"]
    [document] = await privacy.batch().seal_documents(
        conn, Participant, [({"person_id": data.person_id, data.field: value}, data.case_id)]
    )
    await conn.execute(
        """INSERT INTO api.participants AS p (case_id, person_id, rectified) VALUES ($1, $2, $3::jsonb)
           ON CONFLICT (case_id, person_id)
           DO UPDATE SET rectified = COALESCE(p.rectified, '{}'::jsonb) || $3::jsonb""",
        data.case_id,
        data.person_id,
        _json({data.field: document[data.field]}),
    )


Apply = Callable[[asyncpg.Connection, Event, Any], Awaitable[None]]

_APPLY: dict[type[EventData], Apply] = {
    CaseOpened: _case_opened,
    CaseAccepted: _case_accepted,
    CaseDeclined: _case_declined,
    OffenderJoined: _offender_joined,
    VictimInformationDue: _information_due,
    VictimInformationProvided: _information_provided,
    VictimInformationOverdue: _information_overdue,
    VictimSupportReferralDue: _support_due,
    VictimSupportReferralRecorded: _support_recorded,
    VictimSupportReferralOverdue: _support_overdue,
    PreparationStarted: _preparation_started,
    FacilitatorAssigned: _facilitator_assigned,
    RiskAssessmentRecorded: _risk_assessed,
    ConsentGiven: _consent,
    ConsentDeclined: _consent,
    ConsentWithdrawn: _consent,
    CaseReadyForMeeting: _ready,
    CaseReadinessLost: _readiness_lost,
    CaseWithdrawn: _case_withdrawn,
    CaseHeld: _held,
    CaseResumed: _resumed,
    ParticipantAdded: _participant_added,
    ContactAttemptRecorded: _contact_attempt,
    CaseNoteAdded: _note_added,
    MeetingProposed: _meeting_planned,
    MeetingBooked: _meeting_planned,
    MeetingRescheduled: _meeting_planned,
    MeetingCancelled: _meeting_cancelled,
    MeetingHeld: _meeting_held,
    AgreementRecorded: _agreement,
    PaymentRecorded: _payment,
    AgreementItemCompleted: _item_completed,
    AgreementItemDueSoon: _item_due_soon,
    AgreementItemOverdue: _item_overdue,
    CaseClosed: _case_closed,
    ContactFormSwitched: _contact_form,
    IndirectItemSubmitted: _item_submitted,
    IndirectItemApproved: _item_approved,
    IndirectItemRejected: _item_rejected,
    IndirectItemReleased: _item_released,
    IndirectItemWithdrawn: _item_withdrawn,
    IndirectItemDelivered: _item_delivered,
    NotificationScheduled: _notification,
    NotificationSent: _notification,
    NotificationFailed: _notification,
    NotificationUncertain: _notification,
    NotificationCancelled: _notification,
    FacilitatorRegistered: _facilitator_registered,
    VenueRegistered: _venue_registered,
    PersonErased: _person_erased,
    CaseRetentionErased: _retention_erased,
    ParticipantRectified: _rectified,
}
"""What each fact changes beyond the timeline and the command answers (which every case fact goes to)."""


# --- what the service's figures need beyond the pages (services.api.figures; migration 017) ---------------------


async def _figures_declined(conn: asyncpg.Connection, event: Event, data: CaseDeclined) -> None:
    """A case declined at screening ended then: the reoffending comparison counts its offenders from that day."""
    await conn.execute(
        "UPDATE api.cases SET declined_at = $2 WHERE case_id = $1 AND declined_at IS NULL",
        data.case_id,
        data.decided_at,
    )


async def _figures_meeting_held(conn: asyncpg.Connection, event: Event, data: MeetingHeld) -> None:
    """Held stays held (direct RJ took place), whatever status a later fact gives the meeting."""
    await conn.execute(
        """UPDATE api.meetings SET held_at = COALESCE(held_at, $3), kind = COALESCE(kind, $4)
           WHERE case_id = $1 AND meeting_id = $2""",
        data.case_id,
        data.meeting_id,
        data.held_at,
        data.kind.value,
    )


async def _figures_on_time(
    conn: asyncpg.Connection, event: Event, data: VictimInformationProvided | VictimSupportReferralRecorded
) -> None:
    """The Victims' Code clock's state says met, late or not; the figures need which."""
    kind = "victim_information" if isinstance(data, VictimInformationProvided) else "victim_support_referral"
    await conn.execute(
        "UPDATE api.deadlines SET on_time = $4 WHERE case_id = $1 AND kind = $2 AND subject_id = $3",
        data.case_id,
        kind,
        data.person_id,
        data.on_time,
    )


async def _figures_survey_response(conn: asyncpg.Connection, event: Event, data: SurveyResponseRecorded) -> None:
    """Satisfied or not and the score, in clear as the contract has them; the comments stay in the timeline, sealed."""
    await conn.execute(
        """INSERT INTO api.survey_responses (case_id, person_id, role, satisfied, score, responded_at)
           VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (case_id, person_id) DO NOTHING""",
        data.case_id,
        data.person_id,
        data.role.value,
        data.satisfied,
        data.score,
        data.responded_at,
    )


async def _figures_reoffence(conn: asyncpg.Connection, event: Event, data: ReoffenceRecorded) -> None:
    """That a later offence was recorded, against whom (the fact's plain owner); what and when stay sealed."""
    await conn.execute(
        """INSERT INTO api.reoffences (event_id, case_id, person_id, rj_completed, recorded_at)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING""",
        event.id,
        data.case_id,
        data.person_id,
        data.rj_completed,
        data.recorded_at,
    )


_FIGURES: dict[type[EventData], Apply] = {
    CaseDeclined: _figures_declined,
    MeetingHeld: _figures_meeting_held,
    VictimInformationProvided: _figures_on_time,
    VictimSupportReferralRecorded: _figures_on_time,
    SurveyResponseRecorded: _figures_survey_response,
    ReoffenceRecorded: _figures_reoffence,
}
"""What each fact adds for the figures, after ``_APPLY`` (so the rows it updates exist)."""


def loads(document: str | None) -> Any:
    """A jsonb column as asyncpg returns it (text) as a Python value."""
    return json.loads(document) if document is not None else None
