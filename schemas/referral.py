"""Facts the referral service publishes on ``rj.referral`` (subject and key: the case id), and case identity.

**Case identity.** A crime reference is unique only within one force's crime system. A case is identified by
the force (the CloudEvents ``source`` its crime system publishes upstream events with, e.g.
``urn:police:west-mercia:rms``), the crime reference, and which referral of that crime it is (a closed case
may be referred again, as a new case): ``case_id_for``. Several victims and offenders of one crime are
participants of one case. Every event about a case carries its force in the envelope (``force``).
"""

from __future__ import annotations

import uuid
from datetime import date
from enum import StrEnum
from functools import lru_cache
from typing import Annotated, ClassVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.commands import SupportReferralOutcome
from schemas.common import Actor, Channel, Contact
from schemas.envelope import EventData
from schemas.pii import MonitoringPii, Pii
from schemas.scheduling import ClosureReason
from schemas.upstream import MonitoringCategory, Offence, Outcome, Requester

_CASE_NS = uuid.UUID("5d9a3c1e-7f2b-4e8a-b6c4-1a2b3c4d5e6f")


def case_id_for(force: str, crime_reference: str, referral: int = 1) -> str:
    """The case id of the ``referral``-th referral of a force's crime: derived, so that every repeat and replay
    lands on the same case and a UI maps a crime reference to its case without reading ``rj.referral``.

    ``uuid5(NS, force + US + crime_reference)`` for the first referral, ``+ US + str(referral)`` for later ones
    (NS is ``5d9a3c1e-7f2b-4e8a-b6c4-1a2b3c4d5e6f``, US the unit separator chr(31)); leading and trailing spaces
    of the reference are dropped first, as the referral service drops them. An empty ``force`` gives the ids of
    cases opened before forces were told apart (``uuid5(NS, crime_reference)``)."""
    return _case_id(force, crime_reference.strip(), referral)


@lru_cache(maxsize=65536)
def _case_id(force: str, crime_reference: str, referral: int) -> str:
    name = f"{force}\x1f{crime_reference}" if force else crime_reference
    if referral > 1:
        name += f"\x1f{referral}"
    return str(uuid.uuid5(_CASE_NS, name))


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


class AgeBand(StrEnum):
    """An age band for equality monitoring: what is kept of a date of birth once the rest is erased."""

    under_18 = "under_18"
    from_18_to_24 = "18-24"
    from_25_to_34 = "25-34"
    from_35_to_44 = "35-44"
    from_45_to_54 = "45-54"
    from_55_to_64 = "55-64"
    from_65 = "65+"


_BAND_FLOORS: tuple[tuple[int, AgeBand], ...] = (
    (65, AgeBand.from_65),
    (55, AgeBand.from_55_to_64),
    (45, AgeBand.from_45_to_54),
    (35, AgeBand.from_35_to_44),
    (25, AgeBand.from_25_to_34),
    (18, AgeBand.from_18_to_24),
)


def age_band_on(born: date | None, day: date) -> AgeBand | None:
    """The age band of someone born on ``born`` on ``day`` (the crime's reported date); None when the date of
    birth is unknown, or after ``day`` (an error upstream: no band rather than a wrong one)."""
    if born is None or born > day:
        return None
    age = day.year - born.year - ((day.month, day.day) < (born.month, born.day))
    return next((band for floor, band in _BAND_FLOORS if age >= floor), AgeBand.under_18)


class Participant(BaseModel):
    """A person taking part in a case. Contact details travel only to services that contact people.
    ``age_band``, ``gender`` and ``ethnicity`` are monitoring data, sealed under the case's monitoring key: they
    stay readable when the person is erased for declining (rule 7); the case's retention erases them."""

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
    age_band: Annotated[AgeBand | None, MonitoringPii] = Field(
        default=None, description="Derived by the referral service from the date of birth, on the reported date"
    )
    gender: MonitoringCategory = None
    ethnicity: MonitoringCategory = None


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
    force: str | None = Field(default=None, description="The force whose crime it is (see ``case_id_for``)")
    referral: int = Field(default=1, ge=1, description="Which referral of the crime this case is")
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
    force: str | None = Field(default=None, description="The force whose crime it is (see ``case_id_for``)")
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
    force: str | None = Field(default=None, description="The force whose crime it is (see ``case_id_for``)")
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
    before_contact_allowed: bool = Field(
        default=False,
        description="A sensitive case, and no risk assessment allowed contact yet when the information was given: "
        "recorded as it happened, and a safeguarding concern for staff to see",
    )


class VictimInformationOverdue(EventData):
    """The deadline passed with no record of the information being given: a Victims' Code breach."""

    event_type: ClassVar[str] = "rj.victim-information.overdue"

    case_id: str
    crime_reference: str
    person_id: str
    due_by: AwareDatetime
    flagged_at: AwareDatetime
    enhanced_rights: bool


class VictimSupportReferralDue(EventData):
    """The Victims' Code's second clock started: this victim is to be referred to a victim support service by
    ``due_by`` (2 working days after the crime was reported), or to have declined the offer of support."""

    event_type: ClassVar[str] = "rj.victim-support.referral-due"

    case_id: str
    crime_reference: str
    person_id: str
    reported_at: AwareDatetime
    due_by: AwareDatetime
    due_date: date
    working_days: int


class VictimSupportReferralRecorded(EventData):
    """The victim was referred to a victim support service (``support_service``), or declined the offer of
    support: either stops the support-referral clock. ``decided_at`` is when, ``recorded_by`` who recorded it."""

    event_type: ClassVar[str] = "rj.victim-support.referral-recorded"

    case_id: str
    crime_reference: str
    person_id: str
    outcome: SupportReferralOutcome
    support_service: Annotated[
        str | None,
        Field(description="The service referred to (when referred); it can tell what happened: sealed as the victim's"),
        Pii,
    ] = None
    decided_at: AwareDatetime
    recorded_at: AwareDatetime
    recorded_by: Actor
    on_time: bool
    reason: Annotated[str | None, Pii] = None


class VictimSupportReferralOverdue(EventData):
    """The support-referral deadline passed with no referral and no declined offer: a Victims' Code breach."""

    event_type: ClassVar[str] = "rj.victim-support.referral-overdue"

    case_id: str
    crime_reference: str
    person_id: str
    due_by: AwareDatetime
    flagged_at: AwareDatetime


class EarlierCaseEnded(StrEnum):
    closed = "closed"  # accepted, then closed (``closure_reason`` says how)
    screened_out = "screened_out"  # declined at screening (``decline_reason`` says why): RJ never began


class ReoffenceRecorded(EventData):
    """Upstream recorded an outcome that finds against an offender of this earlier, ended case (``person_id``) for
    a later crime (``later_crime_reference``, same force, committed after this case's crime): evaluation's
    reoffending figure (DOMAIN stage 7). Emitted once per (case, later crime). ``closure_reason`` (a
    ``ClosureReason`` value: ``completed`` or one that did not proceed) or ``decline_reason`` says how the earlier
    case ended, so figures can separate completed RJ from the rest; ``rj_completed`` is null when that is not
    known (a case closed before closure reasons were kept, backfilled by migration 007).

    What the later crime was and when are criminal-offence data about the offender, sealed. What the figures need
    (``offence_date``, ``later_outcome``) is under the case's monitoring key: it outlives the offender's erasure
    (they declined or withdrew; erased days later) and goes with the case's retention. The later crime's
    reference identifies them in another force's file: under their own key, so erasing them erases it."""

    event_type: ClassVar[str] = "rj.case.reoffence-recorded"

    case_id: str
    crime_reference: str
    force: str | None = None
    person_id: str = Field(description="The offender (plain: the owner of this fact's personal data)")
    later_crime_reference: Annotated[str, Pii]
    offence_date: Annotated[
        date,
        Field(
            description="The later crime's occurred_at, else reported_at, else the outcome's recorded_at, else when "
            "we learnt of it (UK date)"
        ),
        MonitoringPii,
    ]
    later_outcome: Annotated[
        Outcome | None, Field(description="The later crime's outcome (a finding)"), MonitoringPii
    ] = None
    ended_as: EarlierCaseEnded
    closure_reason: ClosureReason | None = None
    decline_reason: DeclineReason | None = None
    rj_completed: bool | None = Field(
        description="The earlier case closed as completed; false when it closed otherwise or was screened out; null "
        "when how it closed is not known (closed before closure reasons were kept)"
    )
    recorded_at: AwareDatetime
    decided_by: Actor


class OffenderJoined(EventData):
    """Another offender of the case's crime accepted responsibility after the case was accepted: they take part
    in the same case, as a required participant. ``details`` are theirs as upstream gave them (personal data,
    sealed, as on ``rj.case.opened``); ``participant`` is what the case's services need, no personal data."""

    event_type: ClassVar[str] = "rj.case.offender-joined"

    case_id: str
    crime_reference: str
    force: str | None = None
    participant: CaseParticipant
    details: Participant
    joined_at: AwareDatetime
    decided_by: Actor


REFERRAL_EVENTS: tuple[type[EventData], ...] = (
    CaseOpened,
    CaseAccepted,
    CaseDeclined,
    OffenderJoined,
    VictimInformationDue,
    VictimInformationProvided,
    VictimInformationOverdue,
    VictimSupportReferralDue,
    VictimSupportReferralRecorded,
    VictimSupportReferralOverdue,
    ReoffenceRecorded,
)
