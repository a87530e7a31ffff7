"""Facts the referral service publishes on ``rj.referral`` (subject and key: the case id)."""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.common import Actor, Channel, Contact
from schemas.envelope import EventData
from schemas.pii import Pii
from schemas.upstream import Offence, Requester

Language = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$",
        max_length=35,
        description="A BCP 47 language tag",
        examples=["pl", "pa-IN", "bfi"],
    ),
]


class Role(StrEnum):
    """A victim or offender comes from upstream; the others take part for or beside one of the participants
    (``CaseParticipant.supports``) and are added by staff (``rj.participant.add``)."""

    victim = "victim"
    offender = "offender"
    supporter = "supporter"
    parent_guardian = "parent_guardian"  # of a participant under 18: their consent is needed as well
    advocate = "advocate"  # an advocate or intermediary, who speaks for or helps the person communicate
    interpreter = "interpreter"


class Participant(BaseModel):
    """A person taking part in a case. Contact details travel only to services that contact people."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    person_id: str
    role: Role
    required: bool = Field(description="Their consent is needed before any meeting")
    name: Annotated[str | None, Pii] = None
    date_of_birth: Annotated[date | None, Pii] = None
    contact: Annotated[Contact | None, Pii] = None
    preferred_channel: Channel | None = None
    enhanced_rights: bool = False
    vulnerable: bool = False
    in_custody: bool = False
    custody_location: Annotated[str | None, Pii] = None


class CaseParticipant(BaseModel):
    """What the consent and scheduling services need to know about a participant: no personal data."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    person_id: str = Field(min_length=1)
    role: Role
    required: bool
    in_custody: bool = False
    under_18: bool = Field(
        default=False, description="Under 18 when the case was accepted: a parent or guardian's consent is needed too"
    )
    supports: str | None = Field(
        default=None,
        description="For anyone but a victim or offender: the person_id of the participant they take part for",
    )
    language: Language | None = Field(default=None, description="An interpreter's language")


class ReferralRoute(BaseModel):
    """One way the case came to us: the offender's admitted outcome, or someone's explicit request."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    route: Annotated[str, Field(pattern="^(admitted_outcome|request)$")]
    requested_by: Requester | None = None
    person_id: str | None = None


class CaseOpened(EventData):
    event_type: ClassVar[str] = "rj.case.opened"

    case_id: str
    crime_reference: str
    offence: Offence
    participants: list[Participant]
    routes: list[ReferralRoute]
    opened_at: AwareDatetime
    opened_by: Actor


class SensitivityReason(StrEnum):
    domestic_abuse = "domestic_abuse"
    sexual_offence = "sexual_offence"
    hate_crime = "hate_crime"
    victim_under_18 = "victim_under_18"
    victim_vulnerable = "victim_vulnerable"


class CaseAccepted(EventData):
    """Screening passed. A sensitive case needs a specialist facilitator and a risk assessment first."""

    event_type: ClassVar[str] = "rj.case.accepted"

    case_id: str
    crime_reference: str
    specialist_required: bool
    risk_assessment_required: bool
    sensitivity_reasons: list[SensitivityReason]
    participants: list[CaseParticipant] = Field(
        description="Who takes part, and no more: what the case's services need, no personal data (its details "
        "travel, sealed, on rj.case.opened only)"
    )
    decided_at: AwareDatetime
    decided_by: Actor
    reason: str


class DeclineReason(StrEnum):
    offender_denies_responsibility = "offender_denies_responsibility"
    no_identifiable_victim = "no_identifiable_victim"


class CaseDeclined(EventData):
    event_type: ClassVar[str] = "rj.case.declined"

    case_id: str
    crime_reference: str
    reason: DeclineReason
    detail: str
    decided_at: AwareDatetime
    decided_by: Actor


class VictimInformationDue(EventData):
    """The Victims' Code clock started: RJ information is owed to this victim by ``due_by``."""

    event_type: ClassVar[str] = "rj.victim-information.due"

    case_id: str
    crime_reference: str
    person_id: str
    reported_at: AwareDatetime
    due_by: AwareDatetime
    due_date: date
    working_days: int
    enhanced_rights: bool


class VictimInformationProvided(EventData):
    event_type: ClassVar[str] = "rj.victim-information.provided"

    case_id: str
    crime_reference: str
    person_id: str
    provided_at: AwareDatetime
    provided_by: Actor
    on_time: bool


class VictimInformationOverdue(EventData):
    """The deadline passed with no record of the information being given: a Victims' Code breach."""

    event_type: ClassVar[str] = "rj.victim-information.overdue"

    case_id: str
    crime_reference: str
    person_id: str
    due_by: AwareDatetime
    flagged_at: AwareDatetime
    enhanced_rights: bool


REFERRAL_EVENTS: tuple[type[EventData], ...] = (
    CaseOpened,
    CaseAccepted,
    CaseDeclined,
    VictimInformationDue,
    VictimInformationProvided,
    VictimInformationOverdue,
)
