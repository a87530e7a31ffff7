"""What the API answers with: the read model's views, as pydantic models (they become the OpenAPI document).

Personal values (a person's name, contact details, staff's and participants' own words, who declined or withdrew)
are ``None`` unless the caller asked for personal data (``CaseDetail.personal_hidden`` says so), and ``None`` too
once erased (``CaseDetail.erased_fields`` lists those). ``CaseDetail.personal_fields`` lists every personal value
a response shows, by a dotted path, for the view log.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class View(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CaseSummary(View):
    """A case in a list: no personal data."""

    case_id: str
    force: str = Field(description="The force whose crime it is (its crime system's source)")
    status: str | None = Field(
        description="referred, accepted, declined, preparation, ready, withdrawn or closed; null while only facts "
        "that overtook the referral are known"
    )
    crime_reference: str | None
    sensitive: bool = Field(
        description="Needs a specialist facilitator and a risk assessment before any contact; true too while "
        "screening has not said (unknown counts as sensitive)"
    )
    contact_form: str | None = Field(description="conference or indirect; null: never switched (a conference)")
    on_hold: bool = Field(description="On hold for a safeguarding concern")
    opened_at: datetime | None
    updated_at: datetime = Field(description="When the latest fact about the case was decided")
    facilitator_ids: list[str] = Field(description="The facilitators assigned to it now")


class CasePage(View):
    cases: list[CaseSummary]
    next_cursor: str | None = Field(description="Pass as `after` for the next page; null on the last page")


class ContactDetails(View):
    email: str | None
    phone: str | None
    address: str | None


class ConsentState(View):
    """A participant's current decision for one purpose."""

    purpose: str = Field(description="'participation' or 'share:<information>'")
    decision: Literal["given", "declined", "withdrawn"]
    decided_at: datetime


class ParticipantView(View):
    person_id: str
    role: str | None
    required: bool | None = Field(description="Their consent is needed before any meeting")
    supports: str | None = Field(description="Whom they take part for (a supporter, parent, advocate, interpreter)")
    under_18: bool | None
    in_custody: bool | None
    enhanced_rights: bool | None = Field(description="Victims' Code enhanced rights (1 working day for information)")
    vulnerable: bool | None
    preferred_channel: str | None
    language: str | None = Field(description="An interpreter's language")
    erased: bool = Field(description="Their personal data on this case was erased")
    name: str | None = Field(description="Personal")
    date_of_birth: date | None = Field(description="Personal")
    contact: ContactDetails | None = Field(description="Personal")
    custody_location: str | None = Field(description="Personal")
    consent: list[ConsentState] | None = Field(
        description="Their current decision per purpose; null when personal data is hidden (who declined or "
        "withdrew is personal)"
    )


class ConsentDecision(View):
    event_id: str
    person_id: str | None = Field(description="Who decided; personal (null when hidden) when they declined or withdrew")
    purpose: str
    decision: Literal["given", "declined", "withdrawn"]
    decided_at: datetime
    recorded_at: datetime | None
    through: str | None
    method: str | None
    reason: str | None = Field(description="Personal: their own words, if any")


class Hold(View):
    on_hold: bool
    since: datetime | None
    concern: str | None = Field(description="Personal")
    raised_by: str | None = Field(description="Personal")


class RiskAssessment(View):
    level: str
    safe_to_proceed: bool
    assessed_at: datetime


class Meeting(View):
    meeting_id: str
    kind: str | None = Field(description="conference or indirect")
    status: Literal["proposed", "booked", "held", "cancelled"]
    starts_at: datetime | None
    ends_at: datetime | None
    lead_facilitator_id: str | None
    facilitator_ids: list[str]
    venue_id: str | None
    visit_slot: str | None
    attendee_ids: list[str]
    cancellation_reason: str | None = Field(description="A code (requested, case_withdrawn, case_paused, ...)")


class AgreementItem(View):
    item_id: str
    meeting_id: str | None
    kind: str | None
    owner_id: str | None = Field(description="The participant who undertook it")
    due_date: date | None
    amount_pence: int | None
    paid_pence: int
    state: Literal["open", "due_soon", "overdue", "completed"]
    completed_at: datetime | None
    description: str | None = Field(description="Personal")


class ContactAttempt(View):
    event_id: str
    person_id: str | None
    attempted_at: datetime
    method: str | None
    outcome: str | None
    note: str | None = Field(description="Personal")
    breached_safe_contact: bool | None = Field(description="Personal (sealed under the case's key)")


class Note(View):
    note_id: str
    person_id: str | None = Field(description="Whom it concerns, if anyone")
    added_at: datetime
    added_by: str | None
    text: str | None = Field(description="Personal")


class TimelineEntry(View):
    event_id: str
    at: datetime
    event_type: str
    actor: str | None = Field(description="Who decided it (kind:id), when held in clear")
    summary: str = Field(description="One line, without personal data")
    details: dict[str, Any] = Field(description="The fact itself; its personal values null unless asked for")


class Deadline(View):
    case_id: str
    kind: Literal["victim_information", "victim_support_referral", "agreement_item"]
    subject_id: str = Field(description="The victim's person id, or the agreement item's id")
    due_by: datetime | None
    due_date: date | None
    state: Literal["due", "breached", "met"]
    changed_at: datetime


class IndirectItem(View):
    case_id: str
    item_id: str
    sender_id: str | None
    recipient_id: str | None
    kind: str | None = Field(description="message, letter or recording")
    state: Literal["submitted", "approved", "rejected", "released", "withdrawn", "delivered"]
    submitted_at: datetime | None
    changed_at: datetime
    content: str | None = Field(description="Personal: what the facilitator screens")


class Notification(View):
    """One message to one person on one channel (the notify service's), at its latest state."""

    notification_id: str
    kind: str = Field(description="What it is about (meeting_booked, process_stopped, closure, ...)")
    recipient_kind: Literal["participant", "staff"]
    recipient_id: str | None = Field(
        description="Personal (sealed under the case's key): a person id or a facilitator id; null when hidden"
    )
    channel: str | None = Field(description="email, sms, letter, ...; null when no channel was safe")
    due_at: datetime | None = Field(description="When it was due to go (null until its scheduled fact is known)")
    state: Literal["scheduled", "sent", "failed", "uncertain", "cancelled"] = Field(
        description="uncertain: it may or may not have reached the provider; never sent again, the facilitator "
        "should check with the person"
    )
    reason_code: str | None = Field(description="Why it failed or was cancelled")
    next_channel: str | None = Field(description="After a failure, the channel tried next (a notification of its own)")
    updated_at: datetime = Field(description="When the state shown was decided")


class CaseDetail(View):
    case_id: str
    force: str
    status: str | None
    crime_reference: str | None
    referral: int | None = Field(description="Which referral of the crime this case is")
    offence_category: str | None
    sensitive: bool = Field(
        description="Needs a specialist facilitator and a risk assessment before any contact; true too while "
        "screening has not said (unknown counts as sensitive)"
    )
    sensitivity_reasons: list[str]
    specialist_required: bool | None
    risk_assessment_required: bool | None
    risk: RiskAssessment | None = Field(description="The latest risk assessment, by when it was made")
    contact_form: str | None
    hold: Hold
    opened_at: datetime | None
    updated_at: datetime
    closure_reason: str | None
    closed_at: datetime | None
    facilitator_ids: list[str]
    participants: list[ParticipantView]
    consents: list[ConsentDecision]
    meetings: list[Meeting]
    agreement_items: list[AgreementItem]
    contact_log: list[ContactAttempt]
    notes: list[Note]
    deadlines: list[Deadline]
    indirect_items: list[IndirectItem]
    notifications: list[Notification] = Field(
        description="Every message the notify service decided on the case, soonest due first, at its latest state"
    )
    timeline: list[TimelineEntry] = Field(
        description="Every fact of the case in time order; for auditors also the view log (rj.view.logged: who viewed "
        "its personal data, when, which fields, why)"
    )
    personal_hidden: bool = Field(description="Personal values are null: they were not asked for")
    personal_fields: list[str] = Field(description="Every personal value shown, by path (for the view log)")
    erased_fields: list[str] = Field(description="Personal values that were erased, by path (null above)")


class CommandAnswer(View):
    command_id: str
    event_id: str = Field(description="The fact that answers it")
    case_id: str | None
    event_type: str
    status: Literal["accepted", "rejected", "already_handled", "unchanged"]
    reason: str | None = Field(description="Why it was rejected")
    at: datetime
