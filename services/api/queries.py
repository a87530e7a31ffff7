"""The questions staff UIs ask of the read model (``services.api.readmodel``), answered as ``services.api.views``.

Every function takes a connection (the HTTP layer calls them inside its transaction). Personal values are opened
only when asked for (``personal=True``), with this process's privacy keys; a value whose key was destroyed (the
person was erased) is ``None`` and listed in ``erased_fields``, never an error.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import asyncpg
from pydantic import BaseModel

from schemas.api import ViewLogged
from schemas.consent import CaseHeld, CaseNoteAdded, ConsentDeclined, ConsentGiven, ConsentWithdrawn
from schemas.consent import ContactAttemptRecorded as ContactAttemptFact
from schemas.indirect import IndirectItemSubmitted
from schemas.notify import NotificationScheduled
from schemas.referral import Participant
from schemas.registry import REGISTRY
from schemas.scheduling import AgreementItemTerms
from services.api import views
from services.api.folding import hide_sealed
from services.api.principal import CaseAccess
from services.runtime import privacy

MAX_PAGE = 200


class BadCursor(ValueError):
    """A list cursor that this API did not hand out (altered, or from another list)."""


# --- who may see a case --------------------------------------------------------------------------------------


async def case_access(conn: asyncpg.Connection, case_id: str) -> CaseAccess | None:
    """What deciding who may see a case needs; None when there is no such case, or its force is not known yet
    (nobody can be shown a case whose force is unknown)."""
    row = await conn.fetchrow(
        """SELECT c.force, coalesce(array_agg(f.facilitator_id) FILTER (WHERE f.facilitator_id IS NOT NULL), '{}')
                  AS facilitator_ids
             FROM api.cases c LEFT JOIN api.case_facilitators f USING (case_id)
            WHERE c.case_id = $1 GROUP BY c.force""",
        case_id,
    )
    if row is None or row["force"] is None:
        return None
    return CaseAccess(case_id=case_id, force=row["force"], facilitator_ids=frozenset(row["facilitator_ids"]))


# --- lists ------------------------------------------------------------------------------------------------------


def _cursor(updated_at: datetime, case_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([updated_at.isoformat(), case_id]).encode()).decode()


#: What a cursor may name, checked before anything reaches PostgreSQL: a cursor comes back from the caller, who
#: may have altered it. Case ids hold no control characters (PostgreSQL text refuses NUL) and are UTF-8 (no lone
#: surrogates); the time is aware and one PostgreSQL and Python can both hold, and cases change after 1970.
_CURSOR_CASE_ID = re.compile(r"[^\x00-\x1f\x7f]{1,200}")
_CURSOR_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_CURSOR_LATEST = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


def _read_cursor(cursor: str) -> tuple[datetime, str]:
    """The (updated_at, case_id) a cursor of ours holds; ``BadCursor`` for anything else, however it was made."""
    try:
        document = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, TypeError, binascii.Error, UnicodeError, RecursionError) as exc:
        raise BadCursor("not a cursor this list handed out") from exc
    if not (isinstance(document, list) and len(document) == 2 and all(isinstance(p, str) for p in document)):
        raise BadCursor("not a cursor this list handed out")
    at, case_id = document
    try:
        updated_at = datetime.fromisoformat(at)
        case_id.encode("utf-8")
        in_range = updated_at.tzinfo is not None and _CURSOR_EARLIEST <= updated_at <= _CURSOR_LATEST
    except (ValueError, TypeError, OverflowError, UnicodeError) as exc:
        raise BadCursor("not a cursor this list handed out") from exc
    if not in_range or not _CURSOR_CASE_ID.fullmatch(case_id):
        raise BadCursor("not a cursor this list handed out")
    return updated_at, case_id


async def list_cases(
    conn: asyncpg.Connection,
    *,
    force: str,
    facilitator_id: str | None = None,
    status: str | None = None,
    crime_reference: str | None = None,
    sensitive: bool | None = None,
    overdue: bool | None = None,
    limit: int = 50,
    after: str | None = None,
) -> views.CasePage:
    """A force's cases, the most recently changed first (keyset pagination by (updated_at desc, case_id)),
    filtered by assigned facilitator, status, crime reference, sensitivity (unknown counts as sensitive, as the
    summary says) and whether any deadline of the case passed unmet (``overdue``). No personal data."""
    limit = max(1, min(limit, MAX_PAGE))
    # Only the filters asked for go into the statement (each shape is its own prepared statement): a generic plan
    # of "$n IS NULL OR ..." cannot use an index for a filter, nor bound the walk from a cursor, and PostgreSQL
    # turns to generic plans after a few executions.
    args: list[Any] = [force]

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if facilitator_id is not None:
        # One facilitator's cases: walked in their assignments' index (case_updated_at and case_status are the
        # case's updated_at and status, kept so by migration 004), bounded by the page, not by their force's cases.
        walked = "api.case_facilitators m JOIN api.cases c ON c.case_id = m.case_id"
        at_column, status_column = "m.case_updated_at", "m.case_status"
        conditions = ["c.force = $1", f"m.facilitator_id = {arg(facilitator_id)}"]
    else:
        walked, at_column, status_column = "api.cases c", "c.updated_at", "c.status"
        conditions = ["c.force = $1"]
    if status is not None:
        conditions.append(f"{status_column} = {arg(status)}")
    if crime_reference is not None:
        conditions.append(f"c.crime_reference = {arg(crime_reference)}")
    if sensitive is not None:
        conditions.append("c.sensitive IS NOT FALSE" if sensitive else "c.sensitive IS FALSE")
    if overdue is not None:
        breached = "EXISTS (SELECT 1 FROM api.deadlines d WHERE d.case_id = c.case_id AND d.state = 'breached')"
        conditions.append(breached if overdue else f"NOT {breached}")
    if after is not None:
        after_at, after_id = _read_cursor(after)
        at, case_id = arg(after_at), arg(after_id)
        # The first term bounds the index range (updated_at descending); the second breaks ties by case id, which
        # the order takes ascending, so a row comparison cannot say it.
        conditions.append(f"{at_column} <= {at} AND ({at_column} < {at} OR c.case_id > {case_id})")
    rows = await _fetch_after_cursor(
        conn,
        after,
        f"""SELECT c.case_id, c.force, c.status, c.crime_reference, c.sensitive IS NOT FALSE AS sensitive,
                   c.contact_form, c.on_hold,
                   c.opened_at, c.updated_at,
                   ARRAY(SELECT f.facilitator_id FROM api.case_facilitators f WHERE f.case_id = c.case_id
                         ORDER BY f.facilitator_id) AS facilitator_ids
              FROM {walked}
             WHERE {" AND ".join(conditions)}
             ORDER BY {at_column} DESC, c.case_id
             LIMIT {arg(limit + 1)}""",
        *args,
    )
    page = rows[:limit]
    cases = [views.CaseSummary(**dict(r)) for r in page]
    more = len(rows) > limit
    return views.CasePage(
        cases=cases, next_cursor=_cursor(page[-1]["updated_at"], page[-1]["case_id"]) if more else None
    )


async def _fetch_after_cursor(conn: asyncpg.Connection, after: str | None, query: str, *args: Any) -> list[Any]:
    """``conn.fetch``, with PostgreSQL refusing the values a cursor gave turned into ``BadCursor``: a last guard
    behind ``_read_cursor``'s checks, so that whatever they let through is the caller's 400, not our 500."""
    try:
        return await conn.fetch(query, *args)
    except asyncpg.DataError as exc:
        if after is None:
            raise
        raise BadCursor("not a cursor this list handed out") from exc


async def deadlines(
    conn: asyncpg.Connection, *, force: str, facilitator_id: str | None, state: Literal["due", "breached"]
) -> list[views.Deadline]:
    """A force's deadlines in ``state`` (open ones: due; passed and not met: breached), soonest first; only the
    cases ``facilitator_id`` is assigned to, when given."""
    rows = await conn.fetch(
        """SELECT d.case_id, d.kind, d.subject_id, d.due_by, d.due_date, d.state, d.changed_at
             FROM api.deadlines d JOIN api.cases c USING (case_id)
            WHERE c.force = $1 AND d.state = $2
              AND ($3::text IS NULL OR EXISTS (SELECT 1 FROM api.case_facilitators f
                                                WHERE f.case_id = d.case_id AND f.facilitator_id = $3))
            ORDER BY coalesce(d.due_date, d.due_by::date), d.due_by, d.case_id, d.kind, d.subject_id""",
        force,
        state,
        facilitator_id,
    )
    return [views.Deadline(**dict(r)) for r in rows]


async def indirect_awaiting_approval(
    conn: asyncpg.Connection, *, force: str, facilitator_id: str | None
) -> list[views.IndirectItem]:
    """Indirect RJ items submitted and not yet screened (rule 9: the facilitator approves every item), oldest
    first. Their content is not shown here."""
    rows = await conn.fetch(
        """SELECT i.case_id, i.item_id, i.sender_id, i.recipient_id, i.kind, i.state, i.submitted_at, i.changed_at
             FROM api.indirect_items i JOIN api.cases c USING (case_id)
            WHERE c.force = $1 AND i.state = 'submitted'
              AND ($2::text IS NULL OR EXISTS (SELECT 1 FROM api.case_facilitators f
                                                WHERE f.case_id = i.case_id AND f.facilitator_id = $2))
            ORDER BY i.submitted_at NULLS LAST, i.case_id, i.item_id""",
        force,
        facilitator_id,
    )
    return [views.IndirectItem(**dict(r), content=None) for r in rows]


async def command_answers(conn: asyncpg.Connection, command_id: str) -> list[views.CommandAnswer]:
    """What became of a command so far: each fact it caused, its rejection, or "already handled"."""
    rows = await conn.fetch(
        """SELECT command_id, event_id, case_id, event_type, status, reason, at FROM api.command_answers
            WHERE command_id = $1 ORDER BY at, event_id""",
        command_id,
    )
    return [views.CommandAnswer(**dict(r)) for r in rows]


# --- one case, in full --------------------------------------------------------------------------------------


@dataclass
class _Shown:
    """The personal values one response shows and those it could not (erased), by path."""

    personal: bool
    fields: list[str] = field(default_factory=list)
    erased: list[str] = field(default_factory=list)


@dataclass
class _Revealer:
    """Opens sealed documents of one case (when personal data is asked for), or hides their sealed values."""

    conn: asyncpg.Connection
    case_id: str
    shown: _Shown

    async def reveal(
        self, model: type[BaseModel], documents: Sequence[dict[str, Any] | None], prefixes: Sequence[str]
    ) -> list[dict[str, Any]]:
        """``documents`` with sealed values opened (or None when hidden or erased); ``prefixes`` name each one's
        place in the response (``participants[P-1]``) for the paths recorded in ``shown``."""
        present = [(i, d) for i, d in enumerate(documents) if d is not None]
        out: list[dict[str, Any]] = [{} for _ in documents]
        sealed_paths = {i: hide_sealed(d)[1] for i, d in present}
        if not self.shown.personal:
            for i, d in present:
                out[i] = hide_sealed(d)[0]
            return out
        opened = await self._open(model, [d for _, d in present])
        for (i, _), (data, erased) in zip(present, opened, strict=True):
            for path in erased:
                _set(data, path, None)
            out[i] = data
            self.shown.erased += [f"{prefixes[i]}.{p}" for p in erased]
            self.shown.fields += [f"{prefixes[i]}.{p}" for p in sealed_paths[i] if p not in erased]
        return out

    async def _open(
        self, model: type[BaseModel], documents: list[dict[str, Any]]
    ) -> list[tuple[dict[str, Any], list[str]]]:
        batch = privacy.batch()
        try:
            opened = await batch.open_documents(self.conn, model, documents, [self.case_id] * len(documents))
            return [(o.data, [_plain_path(p) for p in o.erased]) for o in opened]
        except ValueError:  # one of them cannot be authentic: open each alone, and show none of that one's
            pass
        out = []
        for document in documents:
            try:
                [o] = await batch.open_documents(self.conn, model, [document], [self.case_id])
                out.append((o.data, [_plain_path(p) for p in o.erased]))
            except ValueError:
                hidden, paths = hide_sealed(document)
                out.append((hidden, paths))
        return out


def _plain_path(path: str) -> str:
    """A path as the key store reports it (``$.contact``) as the response names it (``contact``)."""
    return path.removeprefix("$").lstrip(".")


_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _set(document: Any, path: str, value: Any) -> None:
    """Set the value at a dotted path (``a.b[0].c``) of a JSON document, if it is there."""
    parts: list[str | int] = [int(i) if i else name for name, i in _PATH_PART.findall(path)]
    target = document
    for part in parts[:-1]:
        try:
            target = target[part]
        except (KeyError, IndexError, TypeError):
            return
    if parts:
        try:
            target[parts[-1]] = value
        except (IndexError, TypeError):
            return


def _document(value: str | None) -> dict[str, Any] | None:
    return json.loads(value) if value is not None else None


PARTICIPANT_PERSONAL = ("name", "date_of_birth", "contact", "custody_location")
"""The personal fields of a participant the case view shows (monitoring data is for the figures, not shown)."""

_CONSENT_MODELS: dict[str, type[BaseModel]] = {
    "given": ConsentGiven,
    "declined": ConsentDeclined,
    "withdrawn": ConsentWithdrawn,
}


async def case_detail(
    conn: asyncpg.Connection, case_id: str, *, personal: bool, view_log: bool = False
) -> views.CaseDetail | None:
    """Everything about a case: participants and their roles, consent, hold, meetings, agreement items, contact
    log, notes, deadlines, indirect items, notifications and the timeline. Personal values only with ``personal``;
    the view log's entries (who viewed the case's personal data, when, which fields, why) in the timeline only with
    ``view_log`` (``policy.may_see_view_log``: auditors)."""
    case = await conn.fetchrow("SELECT * FROM api.cases WHERE case_id = $1", case_id)
    if case is None or case["force"] is None:
        return None
    shown = _Shown(personal)
    revealer = _Revealer(conn, case_id, shown)

    facilitator_ids = [
        r["facilitator_id"]
        for r in await conn.fetch(
            "SELECT facilitator_id FROM api.case_facilitators WHERE case_id = $1 ORDER BY facilitator_id", case_id
        )
    ]
    consents = await _consents(conn, revealer, case_id)
    participants = await _participants(conn, revealer, case_id, consents)
    hold = await _hold(revealer, case)
    meetings = [
        views.Meeting(**dict(r))
        for r in await conn.fetch(
            """SELECT meeting_id, kind, status, starts_at, ends_at, lead_facilitator_id, facilitator_ids, venue_id,
                      visit_slot, attendee_ids, cancellation_reason
                 FROM api.meetings WHERE case_id = $1 ORDER BY starts_at NULLS LAST, meeting_id""",
            case_id,
        )
    ]
    items = await _agreement_items(conn, revealer, case_id)
    contact_log = await _contact_log(conn, revealer, case_id)
    notes = await _notes(conn, revealer, case_id)
    deadline_rows = await conn.fetch(
        """SELECT case_id, kind, subject_id, due_by, due_date, state, changed_at FROM api.deadlines
            WHERE case_id = $1 ORDER BY coalesce(due_date, due_by::date), kind, subject_id""",
        case_id,
    )
    indirect = await _indirect_items(conn, revealer, case_id)
    notifications = await _notifications(conn, revealer, case_id)
    timeline = await _timeline(conn, revealer, case_id, view_log=view_log)
    risk = (
        views.RiskAssessment(
            level=case["risk_level"], safe_to_proceed=case["safe_to_proceed"], assessed_at=case["risk_assessed_at"]
        )
        if case["risk_level"] is not None
        else None
    )
    return views.CaseDetail(
        case_id=case_id,
        force=case["force"],
        status=case["status"],
        crime_reference=case["crime_reference"],
        referral=case["referral"],
        offence_category=case["offence_category"],
        sensitive=case["sensitive"] is not False,  # unknown (not screened yet) counts as sensitive
        sensitivity_reasons=list(case["sensitivity_reasons"]),
        specialist_required=case["specialist_required"],
        risk_assessment_required=case["risk_assessment_required"],
        risk=risk,
        contact_form=case["contact_form"],
        hold=hold,
        opened_at=case["opened_at"],
        updated_at=case["updated_at"],
        closure_reason=case["closure_reason"],
        closed_at=case["closed_at"],
        facilitator_ids=facilitator_ids,
        participants=participants,
        consents=consents,
        meetings=meetings,
        agreement_items=items,
        contact_log=contact_log,
        notes=notes,
        deadlines=[views.Deadline(**dict(r)) for r in deadline_rows],
        indirect_items=indirect,
        notifications=notifications,
        timeline=timeline,
        personal_hidden=not personal,
        personal_fields=shown.fields,
        erased_fields=sorted(set(shown.erased)),
    )


async def _consents(conn: asyncpg.Connection, revealer: _Revealer, case_id: str) -> list[views.ConsentDecision]:
    rows = await conn.fetch(
        "SELECT * FROM api.consents WHERE case_id = $1 ORDER BY decided_at, recorded_at, event_id", case_id
    )
    out = []
    for row in rows:
        [fact] = await revealer.reveal(
            _CONSENT_MODELS[row["decision"]], [_document(row["fact"])], [f"consents[{row['event_id']}]"]
        )
        person_id = row["person_id"] or fact.get("person_id")
        out.append(
            views.ConsentDecision(
                event_id=row["event_id"],
                person_id=person_id if isinstance(person_id, str) else None,
                purpose=row["purpose"],
                decision=row["decision"],
                decided_at=row["decided_at"],
                recorded_at=row["recorded_at"],
                through=row["through"],
                method=row["method"],
                reason=fact.get("reason"),
            )
        )
    return out


def current_consent(decisions: Sequence[views.ConsentDecision], person_id: str) -> list[views.ConsentState]:
    """A person's latest decision per purpose (decisions come in the order they were made)."""
    latest: dict[str, views.ConsentDecision] = {}
    for decision in decisions:
        if decision.person_id == person_id:
            latest[decision.purpose] = decision
    return [
        views.ConsentState(purpose=d.purpose, decision=d.decision, decided_at=d.decided_at)
        for d in sorted(latest.values(), key=lambda d: d.purpose)
    ]


async def _participants(
    conn: asyncpg.Connection, revealer: _Revealer, case_id: str, consents: list[views.ConsentDecision]
) -> list[views.ParticipantView]:
    rows = await conn.fetch(
        "SELECT * FROM api.participants WHERE case_id = $1 ORDER BY added_at NULLS LAST, person_id", case_id
    )
    documents: list[dict[str, Any] | None] = []
    for row in rows:
        details = _document(row["details"]) or {}
        corrected = _document(row["rectified"]) or {}
        shown = {name: value for name, value in {**details, **corrected}.items() if name in PARTICIPANT_PERSONAL}
        documents.append({"person_id": row["person_id"], **shown})
    prefixes = [f"participants[{r['person_id']}]" for r in rows]
    opened = await revealer.reveal(Participant, documents, prefixes)
    out = []
    for row, details, prefix in zip(rows, opened, prefixes, strict=True):
        if row["erased"] and not revealer.shown.personal:
            # Known from rj.person.erased without opening anything.
            revealer.shown.erased += [f"{prefix}.{name}" for name in PARTICIPANT_PERSONAL if name in details]
        contact = details.get("contact")
        out.append(
            views.ParticipantView(
                person_id=row["person_id"],
                role=row["role"],
                required=row["required"],
                supports=row["supports"],
                under_18=row["under_18"],
                in_custody=row["in_custody"],
                enhanced_rights=row["enhanced_rights"],
                vulnerable=row["vulnerable"],
                preferred_channel=row["preferred_channel"],
                language=row["language"],
                erased=row["erased"],
                name=details.get("name"),
                date_of_birth=details.get("date_of_birth"),
                contact=views.ContactDetails(**_contact_fields(contact)) if isinstance(contact, dict) else None,
                custody_location=details.get("custody_location"),
                consent=current_consent(consents, row["person_id"]) if revealer.shown.personal else None,
            )
        )
    return out


def _contact_fields(contact: dict[str, Any]) -> dict[str, Any]:
    return {name: contact.get(name) for name in ("email", "phone", "address")}


async def _hold(revealer: _Revealer, case: asyncpg.Record) -> views.Hold:
    [held] = await revealer.reveal(CaseHeld, [_document(case["hold"])], ["hold"])
    return views.Hold(
        on_hold=case["on_hold"],
        since=case["hold_changed_at"] if case["on_hold"] else None,
        concern=held.get("concern"),
        raised_by=held.get("raised_by"),
    )


async def _agreement_items(conn: asyncpg.Connection, revealer: _Revealer, case_id: str) -> list[views.AgreementItem]:
    rows = await conn.fetch("SELECT * FROM api.agreement_items WHERE case_id = $1 ORDER BY due_date, item_id", case_id)
    terms = await revealer.reveal(
        AgreementItemTerms, [_document(r["terms"]) for r in rows], [f"agreement_items[{r['item_id']}]" for r in rows]
    )
    return [
        views.AgreementItem(
            item_id=r["item_id"],
            meeting_id=r["meeting_id"],
            kind=r["kind"],
            owner_id=r["owner_id"],
            due_date=r["due_date"],
            amount_pence=r["amount_pence"],
            paid_pence=r["paid_pence"],
            state=r["state"],
            completed_at=r["completed_at"],
            description=t.get("description"),
        )
        for r, t in zip(rows, terms, strict=True)
    ]


async def _contact_log(conn: asyncpg.Connection, revealer: _Revealer, case_id: str) -> list[views.ContactAttempt]:
    rows = await conn.fetch(
        "SELECT * FROM api.contact_attempts WHERE case_id = $1 ORDER BY attempted_at, event_id", case_id
    )
    facts = await revealer.reveal(
        ContactAttemptFact, [_document(r["fact"]) for r in rows], [f"contact_log[{r['event_id']}]" for r in rows]
    )
    return [
        views.ContactAttempt(
            event_id=r["event_id"],
            person_id=r["person_id"],
            attempted_at=r["attempted_at"],
            method=r["method"],
            outcome=r["outcome"],
            note=f.get("note"),
            breached_safe_contact=f.get("breached_safe_contact"),
        )
        for r, f in zip(rows, facts, strict=True)
    ]


async def _notes(conn: asyncpg.Connection, revealer: _Revealer, case_id: str) -> list[views.Note]:
    rows = await conn.fetch("SELECT * FROM api.notes WHERE case_id = $1 ORDER BY added_at, event_id", case_id)
    facts = await revealer.reveal(
        CaseNoteAdded, [_document(r["fact"]) for r in rows], [f"notes[{r['note_id']}]" for r in rows]
    )
    return [
        views.Note(
            note_id=r["note_id"],
            person_id=r["person_id"],
            added_at=r["added_at"],
            added_by=r["added_by"],
            text=f.get("text"),
        )  # fmt: skip
        for r, f in zip(rows, facts, strict=True)
    ]


async def _indirect_items(conn: asyncpg.Connection, revealer: _Revealer, case_id: str) -> list[views.IndirectItem]:
    rows = await conn.fetch(
        "SELECT * FROM api.indirect_items WHERE case_id = $1 ORDER BY submitted_at NULLS LAST, item_id", case_id
    )
    submissions = await revealer.reveal(
        IndirectItemSubmitted,
        [_document(r["submission"]) for r in rows],
        [f"indirect_items[{r['item_id']}]" for r in rows],
    )
    return [
        views.IndirectItem(
            case_id=r["case_id"],
            item_id=r["item_id"],
            sender_id=r["sender_id"],
            recipient_id=r["recipient_id"],
            kind=r["kind"],
            state=r["state"],
            submitted_at=r["submitted_at"],
            changed_at=r["changed_at"],
            content=s.get("content"),
        )
        for r, s in zip(rows, submissions, strict=True)
    ]


async def _notifications(conn: asyncpg.Connection, revealer: _Revealer, case_id: str) -> list[views.Notification]:
    """Whom each went to is opened like any sealed value (shown and view-logged only with personal data)."""
    rows = await conn.fetch(
        """SELECT * FROM api.notifications WHERE case_id = $1
            ORDER BY coalesce(due_at, updated_at), notification_id""",
        case_id,
    )
    recipients = await revealer.reveal(
        NotificationScheduled,  # any of the notification facts: recipient_id is sealed alike on each
        [_document(r["recipient"]) for r in rows],
        [f"notifications[{r['notification_id']}]" for r in rows],
    )
    return [
        views.Notification(
            notification_id=r["notification_id"],
            kind=r["kind"],
            recipient_kind=r["recipient_kind"],
            recipient_id=recipient.get("recipient_id"),
            channel=r["channel"],
            due_at=r["due_at"],
            state=r["state"],
            reason_code=r["reason_code"],
            next_channel=r["next_channel"],
            updated_at=r["updated_at"],
        )
        for r, recipient in zip(rows, recipients, strict=True)
    ]


async def _timeline(
    conn: asyncpg.Connection, revealer: _Revealer, case_id: str, *, view_log: bool
) -> list[views.TimelineEntry]:
    rows = await conn.fetch(
        "SELECT * FROM api.timeline WHERE case_id = $1 AND (event_type <> $2 OR $3) ORDER BY at, event_id",
        case_id,
        ViewLogged.event_type,
        view_log,
    )
    out = []
    by_type: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_type.setdefault(row["event_type"], []).append(i)
    details: list[dict[str, Any]] = [{} for _ in rows]
    for event_type, indexes in by_type.items():
        opened = await revealer.reveal(
            REGISTRY.model(event_type),
            [_document(rows[i]["fact"]) for i in indexes],
            [f"timeline[{rows[i]['event_id']}].details" for i in indexes],
        )
        for i, document in zip(indexes, opened, strict=True):
            details[i] = document
    for row, document in zip(rows, details, strict=True):
        out.append(
            views.TimelineEntry(
                event_id=row["event_id"],
                at=row["at"],
                event_type=row["event_type"],
                actor=row["actor"],
                summary=row["summary"],
                details=document,
            )
        )
    return out
