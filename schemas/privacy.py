"""Personal data: the privacy service's commands on ``rj.commands`` and its facts on ``rj.privacy``.

- **Erasure**: ``rj.privacy.erase`` erases a person on one case, or on every case, by destroying their data
  keys (crypto-shredding); ``rj.person.erased`` records who, where, by whom, why, when and how many keys.
- **Retention**: a case's personal data is erased a set time after it closes (a schedule per outcome and
  role, in settings); a hold (``rj.retention-hold.place`` / ``.lift``) stops that while it stands, and
  ``rj.case.retention-erased`` records what went, under which rule.
- **Declined participants** (rule 7): when someone declines or withdraws from taking part
  (``rj.consent.declined`` / ``rj.consent.withdrawn``, purpose ``participation``; the consent service itself calls
  a decline after consenting a withdrawal, so the two are treated alike), their data key on that case is
  destroyed when the consent service decides, in case order, that it is due (``rj.participant.erasure-due``: a
  grace period, ``declined_erasure_delay_s``, after the decline, the case open or closed, so every service acts on
  the decision first; consenting again before then calls it off). Their ids, role and
  monitoring data (age band, gender, ethnicity: under the case's monitoring key) stay readable;
  ``rj.declined-participant.erased`` records it. Their data on other cases is not touched.
- **Rectification**: ``rj.participant.rectify`` corrects one of a participant's personal fields;
  ``rj.participant.rectified`` is the correction, a new fact beside history, never an edit of it.

Whose key a marked value is under follows fieldcrypt's ownership rule (the nearest plain ``person_id``,
else the case). The records of an erasure and of a hold name the person some other way on purpose, so
that their grounds (staff's words, marked like every reason) stay readable under the case's key rather
than going with the key they record destroying.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from schemas.common import Actor, Contact
from schemas.envelope import EventData
from schemas.pii import CasePii, Pii

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _printable(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


#: An identifier we store and key by: printable, bounded (PostgreSQL refuses NUL in text).
Identifier = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_printable)]
#: Staff's words on why: personal data like every reason, and bounded.
Grounds = Annotated[str, Field(min_length=1, max_length=2000), Pii]

PERSON_SUBJECT_PREFIX = "person:"


def person_subject(person_id: str) -> str:
    """The subject (and Kafka key) of an erasure on every case of a person: there is no one case id."""
    return f"{PERSON_SUBJECT_PREFIX}{person_id}"


# --- erasure ------------------------------------------------------------------------------------


class ErasePerson(EventData):
    """Erase a person on one case (``case_id``) or on every case we hold them on (no ``case_id``)."""

    event_type: ClassVar[str] = "rj.privacy.erase"

    person_id: Identifier
    case_id: Identifier | None = None
    reason: Grounds
    actor: Actor

    @property
    def subject(self) -> str:
        return self.case_id or person_subject(self.person_id)


class PersonErased(EventData):
    """A person's data keys were destroyed: what was written under them reads as erased from now on."""

    event_type: ClassVar[str] = "rj.person.erased"

    erased_person_id: str = Field(description="Who was erased (not `person_id`: see the module docstring)")
    case_id: str | None = Field(description="The case they were erased on; none: every case")
    cases: list[str] = Field(description="The cases erased now")
    kept_under_hold: list[str] = Field(default_factory=list, description="Their cases kept: under a retention hold")
    keys_destroyed: int
    erased_by: Actor
    reason: Grounds
    erased_at: AwareDatetime


#: What stays readable of a participant erased for declining: their ids and role, and what monitoring needs.
KEPT_FOR_MONITORING: tuple[str, ...] = ("person_id", "role", "age_band", "gender", "ethnicity")


class DeclinedParticipantErased(EventData):
    """Someone who declined or withdrew from taking part was erased on the case, on the consent service's
    ``rj.participant.erasure-due`` (a grace period, ``declined_erasure_delay_s``, after the decline): their data
    key there was destroyed, keeping only ``kept``. Who they
    were and their role are sealed under the case's key (who declined is never to be told in clear, and on a case
    with one victim the role would name her), as is who recorded the decline."""

    event_type: ClassVar[str] = "rj.declined-participant.erased"

    case_id: str
    erased_person_id: Annotated[str, CasePii] = Field(description="Who declined (under the case's key)")
    role: Annotated[str | None, CasePii] = Field(
        description="Their role on the case, as the privacy service indexed it (under the case's key: on a case "
        "with one victim, 'victim' in clear would name her)"
    )
    decline_id: str = Field(
        description="Why: the id of the rj.consent.declined or rj.consent.withdrawn fact (purpose 'participation')"
    )
    declined_at: AwareDatetime
    declined_by: Annotated[Actor, CasePii] = Field(
        description="Who recorded the decline or withdrawal: the person, or staff"
    )
    kept: list[str] = Field(description="What stays readable: ids, role and the monitoring fields")
    kept_under_hold: bool = Field(
        description="True when a retention hold on the case deferred the erasure, done when its last hold was "
        "lifted; false when done on reading rj.participant.erasure-due"
    )
    keys_destroyed: int
    erased_at: AwareDatetime


# --- retention ----------------------------------------------------------------------------------


class HoldKind(StrEnum):
    legal = "legal"
    complaint = "complaint"
    safeguarding_review = "safeguarding_review"


class PlaceRetentionHold(EventData):
    """Keep a case's personal data past its retention period, until the hold is lifted."""

    event_type: ClassVar[str] = "rj.retention-hold.place"

    case_id: Identifier
    kind: HoldKind
    reason: Grounds
    actor: Actor


class LiftRetentionHold(EventData):
    event_type: ClassVar[str] = "rj.retention-hold.lift"

    case_id: Identifier
    kind: HoldKind
    reason: Grounds
    actor: Actor


class RetentionHoldPlaced(EventData):
    event_type: ClassVar[str] = "rj.retention-hold.placed"

    case_id: str
    kind: HoldKind
    reason: Grounds
    placed_by: Actor
    placed_at: AwareDatetime


class RetentionHoldLifted(EventData):
    event_type: ClassVar[str] = "rj.retention-hold.lifted"

    case_id: str
    kind: HoldKind
    reason: Grounds
    lifted_by: Actor
    lifted_at: AwareDatetime
    holds_remaining: list[HoldKind] = Field(description="Other holds still keeping the case")


class ErasedRole(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    person_id: str
    role: str
    rule: str = Field(description="The retention schedule entry applied, e.g. 'screened_out/offender'")
    period: str = Field(description="Its period, e.g. '24 months'")
    due_at: AwareDatetime


class CaseRetentionErased(EventData):
    """Retention ran out for these people on a closed case (and, once everyone's has, for the case's own
    data too): their data keys were destroyed."""

    event_type: ClassVar[str] = "rj.case.retention-erased"

    case_id: str
    outcome: str = Field(description="How the case ended: a closure reason, or 'screened_out'")
    closed_at: AwareDatetime
    people: list[ErasedRole]
    whole_case: bool = Field(description="Everything left on the case was erased, its own data included")
    keys_destroyed: int
    erased_at: AwareDatetime


# --- rectification ------------------------------------------------------------------------------


class RectifyParticipant(EventData):
    """Correct one of a participant's personal fields (``Participant``'s marked fields) on a case."""

    event_type: ClassVar[str] = "rj.participant.rectify"

    case_id: Identifier
    person_id: Identifier
    field: Annotated[str, Field(min_length=1, max_length=100)]
    value: Annotated[str | Contact | None, Pii] = Field(
        description="The corrected value: text (a date as YYYY-MM-DD), or a contact; null clears it"
    )
    reason: Grounds
    actor: Actor


class ParticipantRectified(EventData):
    """A correction of a participant's field: it supersedes what earlier facts said, which stay as they were."""

    event_type: ClassVar[str] = "rj.participant.rectified"

    case_id: str
    person_id: str
    field: str
    value: Annotated[str | Contact | None, Pii]
    reason: Grounds
    rectified_by: Actor
    rectified_at: AwareDatetime


PRIVACY_COMMANDS: tuple[type[EventData], ...] = (ErasePerson, PlaceRetentionHold, LiftRetentionHold, RectifyParticipant)
PRIVACY_EVENTS: tuple[type[EventData], ...] = (
    PersonErased,
    RetentionHoldPlaced,
    RetentionHoldLifted,
    CaseRetentionErased,
    ParticipantRectified,
    DeclinedParticipantErased,
)
