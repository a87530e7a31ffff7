"""What upstream crime systems publish on ``crime.events``, keyed by crime reference.

Upstream teams code against these names: keep them exactly. New fields must be optional; ``null``
means the value is unknown.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from schemas.common import Channel, Contact
from schemas.envelope import EventData
from schemas.pii import MonitoringPii, Pii

#: Equality-monitoring categories as the force records them (its own codes, e.g. the 18+1 ethnicity
#: categories): kept, under the case's monitoring key, for someone who declines, when all else is erased.
MonitoringCategory = Annotated[str | None, Field(max_length=100), MonitoringPii]

# Upstream systems pad references now and then; one crime must not become two cases.
CrimeReference = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class Offence(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    code: str = Field(min_length=1)
    category: str = Field(min_length=1)
    description: str | None = None


class Victim(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    person_id: str = Field(min_length=1)
    name: Annotated[str | None, Pii] = None
    date_of_birth: Annotated[date | None, Pii] = None
    contact: Annotated[Contact | None, Pii] = None
    preferred_channel: Channel | None = None
    enhanced_rights: bool = False
    vulnerable: bool = False
    gender: MonitoringCategory = None
    ethnicity: MonitoringCategory = None


class CrimeRecorded(EventData):
    event_type: ClassVar[str] = "crime.recorded"

    crime_reference: CrimeReference
    offence: Offence
    occurred_at: AwareDatetime | None = None
    reported_at: AwareDatetime
    victims: list[Victim] = Field(default_factory=list)


class Outcome(StrEnum):
    charged = "charged"
    cautioned = "cautioned"
    community_resolution = "community_resolution"
    convicted = "convicted"
    no_further_action = "no_further_action"


class RiskFlag(StrEnum):
    domestic_abuse = "domestic_abuse"
    sexual_offence = "sexual_offence"
    hate_crime = "hate_crime"


class Offender(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    person_id: str = Field(min_length=1)
    name: Annotated[str | None, Pii] = None
    date_of_birth: Annotated[date | None, Pii] = None
    contact: Annotated[Contact | None, Pii] = None
    in_custody: bool = False
    custody_location: Annotated[str | None, Pii] = None
    gender: MonitoringCategory = None
    ethnicity: MonitoringCategory = None


class CrimeOutcomeRecorded(EventData):
    event_type: ClassVar[str] = "crime.outcome-recorded"

    crime_reference: CrimeReference
    offender: Offender
    outcome: Outcome
    admitted_responsibility: bool | None = None
    risk_flags: list[RiskFlag] = Field(default_factory=list)
    recorded_at: AwareDatetime | None = None


class Requester(StrEnum):
    victim = "victim"
    offender = "offender"
    officer = "officer"
    partner_agency = "partner_agency"


class ReferralRequested(EventData):
    event_type: ClassVar[str] = "rj.referral-requested"

    crime_reference: CrimeReference
    requested_by: Requester
    person_id: str | None = None
    notes: Annotated[str | None, Pii] = None
    requested_at: AwareDatetime | None = None


UPSTREAM_EVENTS: tuple[type[EventData], ...] = (CrimeRecorded, CrimeOutcomeRecorded, ReferralRequested)
