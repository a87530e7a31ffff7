"""The service's figures (services/api/figures.py) against a set of cases computed by hand.

The cases below are folded through the real read model (``readmodel.take_in``, the projection the api service runs)
into a real PostgreSQL, with personal data sealed as in production; the figures are asked for over HTTP (the real
app, the real token verifier and a local OpenID Connect issuer), as JSON, as CSV and as the console's page, and each
must show exactly the numbers worked out by hand in the comments and constants here.

Force A, UK time (Europe/London; British Summer Time from 30 March 2025):

  case  opened (UTC)            offence  people (age band, gender, ethnicity)        what happened
  A01   2025-01-06              VAP      V 25-34 f W1, O 25-34 m W1               conference held; items i1, i2 done;
                                                                                  closed completed 03-20; V satisfied
                                                                                  03-22 (O not satisfied: not a victim);
                                                                                  O reoffended once
  A02   2025-01-09              VAP      V 25-34 f W1, Oa 18-24 m A1, Ob 18-24 m A1  conference held; items i4, i5
                                                                                  done; closed completed 03-25; V
                                                                                  satisfied 03-27; Ob reoffended twice
  A03   2025-01-14              theft    V 35-44 f W1, O 25-34 m W1               letter delivered (indirect);
                                                                                  closed completed 02-20; V satisfied
                                                                                  02-25
  A04   2025-01-20              VAP      V 35-44 f W1, O 45-54 m B1               conference booked, cancelled; closed
                                                                                  withdrawn 02-15; O reoffended once
  A05   2025-01-31 23:59:59     theft    V 25-34 f A1, O 25-34 m W1               closed not suitable 03-05
        (the last second of January: GMT)
  A06   2025-02-03              VAP      V 35-44 f W1, O 25-34 m W1               conference held; item i6 done;
                                                                                  closed completed 03-28; V not
                                                                                  satisfied 03-29
  A07   2025-02-07              theft    V 35-44 f W1, O 18-24 nb M1              letter delivered; closed completed
                                                                                  03-12; V satisfied at 2025-03-31
                                                                                  23:00 UTC (00:00 on 1 April, BST)
  A08   2025-02-11              VAP      V 45-54 f B1, O 25-34 m W1               letter approved, never delivered
  A09   2025-02-14              theft    V 35-44 f A1, O 18-24 m A1               an indirect meeting held (not a
                                                                                  conference); items i3 (overdue), i7
                                                                                  (due soon), i8 (April, done)
  A10   2025-02-18              VAP      V - f W1, O 25-34 m B1                   (RJ information late, see below)
  A11   2025-02-21              damage   V 45-54 f W1, O - nb M1                  declined at screening 02-28; O
                                                                                  reoffended twice
  A12   2025-03-31 22:59:59     VAP      V 35-44 f W1, O 25-34 m W1               (23:59:59 BST: the last second of Q1)
  A13   2025-03-31 23:00:00     theft    V 25-34 f W1, O 25-34 m W1               (00:00:00 BST on 1 April: Q2)

RJ information (Victims' Code), by due date: A01-A04 due in January, given on time; A05-A08 due in February, on time;
A09 due 02-21, given late; A10 due 02-25, flagged overdue, then given late; A11 due 02-28, overdue, never given;
A12 due 04-07, on time; A13 due 04-07, still running (pending).

Agreement items by due date: February i1, i2, i4 (all done); March i3 (overdue), i5 (done early), i6 (done), i7 (due
soon, open); April i8 (done).

Force B (another force) has two cases in January with a conference, an indirect item, an item, a survey answer, an
overdue clock and a reoffence: none of it may reach force A's figures.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from schemas.common import Actor
from schemas.consent import SurveyResponseRecorded
from schemas.envelope import CloudEvent, EventData, new_event
from schemas.indirect import (
    IndirectItemApproved,
    IndirectItemDelivered,
    IndirectItemKind,
    IndirectItemReleased,
    IndirectItemSubmitted,
    ReleaseTrigger,
)
from schemas.referral import (
    AgeBand,
    CaseDeclined,
    CaseOpened,
    DeclineReason,
    EarlierCaseEnded,
    Participant,
    ReferralRoute,
    ReoffenceRecorded,
    Role,
    VictimInformationDue,
    VictimInformationOverdue,
    VictimInformationProvided,
)
from schemas.scheduling import (
    AgreementItemCompleted,
    AgreementItemDueSoon,
    AgreementItemOverdue,
    AgreementItemTerms,
    AgreementRecorded,
    CancellationReason,
    CaseClosed,
    ClosureReason,
    ItemKind,
    MeetingBooked,
    MeetingCancelled,
    MeetingHeld,
    MeetingKind,
)
from schemas.upstream import Offence, Outcome
from services.api import links, readmodel
from services.api.auth import TokenVerifier
from services.api.http import create_app
from services.api.issuer import LocalIssuer
from services.api.principal import Role as StaffRole
from services.runtime import privacy
from services.runtime.db import create_pool, migrate, transaction
from services.runtime.devstack import create_database, drop_database
from services.runtime.keystore import MasterKeys, ensure_schema
from services.runtime.privacy import Privacy, batch_scope
from services.runtime.settings import Settings

pytestmark = pytest.mark.integration

FORCE = "urn:police:figures-a:rms"
OTHER_FORCE = "urn:police:figures-b:rms"
STAFF = Actor(kind="staff", id="C-1")
SETTINGS = Settings(master_keys=SecretStr(MasterKeys.generate("fig1")))
MIGRATION = Path(__file__).resolve().parents[2] / "services" / "api" / "migrations" / "017_figures.sql"

VAP, THEFT, DAMAGE = "violence_against_the_person", "theft", "criminal_damage"
W1, A1, B1, M1 = "E-W1", "E-A1", "E-B1", "E-M1"  # the force's own ethnicity codes
F, M, NB = "female", "male", "non-binary"


def utc(text: str) -> datetime:
    """A moment in UTC, written ``2025-01-06`` (10:00) or ``2025-03-31 22:59:59``."""
    return datetime.fromisoformat(text if " " in text else f"{text} 10:00").replace(tzinfo=UTC)


# --- the cases --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    person_id: str
    role: Role
    age_band: str | None
    gender: str | None
    ethnicity: str | None


class Facts:
    """Facts in the order they are folded, each in an envelope carrying its case's force, as services publish them."""

    def __init__(self) -> None:
        self.events: list[CloudEvent[Any]] = []
        self.force: dict[str, str] = {}

    def add(self, data: EventData, when: datetime) -> None:
        case_id: str = data.case_id  # type: ignore[attr-defined]
        self.events.append(new_event(data, source="urn:test", subject=case_id, time=when, force=self.force[case_id]))

    def opened(self, case_id: str, when: str, offence: str, people: list[Person], *, force: str = FORCE) -> None:
        self.force[case_id] = force
        participants = [
            Participant(
                person_id=p.person_id, role=p.role, required=True, name=f"Name of {p.person_id}",
                age_band=AgeBand(p.age_band) if p.age_band else None, gender=p.gender, ethnicity=p.ethnicity,
            )
            for p in people
        ]  # fmt: skip
        at = utc(when)
        self.add(
            CaseOpened(
                case_id=case_id, crime_reference=f"CR/{case_id}", force=force,
                offence=Offence(code="1", category=offence), participants=participants,
                routes=[ReferralRoute(route="admitted_outcome")], opened_at=at, opened_by=STAFF,
            ),
            at,
        )  # fmt: skip

    def information(self, case_id: str, due: str, *, given: str | None = None, on_time: bool = True,
                    overdue: str | None = None) -> None:  # fmt: skip
        victim, due_day = f"{case_id}-V", date.fromisoformat(due)
        due_by = datetime(due_day.year, due_day.month, due_day.day, 23, 59, tzinfo=UTC)
        self.add(
            VictimInformationDue(
                case_id=case_id, crime_reference=f"CR/{case_id}", person_id=victim, reported_at=due_by - timedelta(7),
                due_by=due_by, due_date=due_day, working_days=5, enhanced_rights=False,
            ),
            due_by - timedelta(days=7),
        )  # fmt: skip
        if overdue:
            self.add(
                VictimInformationOverdue(
                    case_id=case_id, crime_reference=f"CR/{case_id}", person_id=victim, due_by=due_by,
                    flagged_at=utc(overdue), enhanced_rights=False,
                ),
                utc(overdue),
            )  # fmt: skip
        if given:
            self.add(
                VictimInformationProvided(
                    case_id=case_id, crime_reference=f"CR/{case_id}", person_id=victim, provided_at=utc(given),
                    provided_by=STAFF, on_time=on_time,
                ),
                utc(given),
            )  # fmt: skip

    def meeting(self, case_id: str, kind: MeetingKind, booked: str, *, held: str | None = None,
                cancelled: str | None = None) -> None:  # fmt: skip
        starts = utc(held or booked) + timedelta(days=1 if not held else 0)
        self.add(
            MeetingBooked(
                case_id=case_id, meeting_id="M1", kind=kind, starts_at=starts, ends_at=starts + timedelta(hours=2),
                lead_facilitator_id="F-1", facilitator_ids=["F-1", "F-2"], attendee_ids=[], booked_at=utc(booked),
                booked_by=STAFF,
            ),
            utc(booked),
        )  # fmt: skip
        if held:
            self.add(
                MeetingHeld(case_id=case_id, meeting_id="M1", kind=kind, held_at=utc(held), recorded_at=utc(held),
                            recorded_by=STAFF),
                utc(held),
            )  # fmt: skip
        if cancelled:
            self.add(
                MeetingCancelled(case_id=case_id, meeting_id="M1", reason_code=CancellationReason.case_withdrawn,
                                 cancelled_at=utc(cancelled), cancelled_by=STAFF),
                utc(cancelled),
            )  # fmt: skip

    def agreement(self, case_id: str, when: str, items: dict[str, str]) -> None:
        terms = [
            AgreementItemTerms(item_id=item_id, kind=ItemKind.apology, description=f"Apology {item_id}",
                               owner_id=f"{case_id}-O", due_date=date.fromisoformat(due))
            for item_id, due in items.items()
        ]  # fmt: skip
        self.add(
            AgreementRecorded(case_id=case_id, meeting_id="M1", items=terms, consented_by=[f"{case_id}-V"],
                              recorded_at=utc(when), recorded_by=STAFF),
            utc(when),
        )  # fmt: skip

    def item_done(self, case_id: str, item_id: str, when: str) -> None:
        self.add(
            AgreementItemCompleted(case_id=case_id, item_id=item_id, kind=ItemKind.apology, by_payments=False,
                                   completed_at=utc(when), completed_by=STAFF),
            utc(when),
        )  # fmt: skip

    def letter(self, case_id: str, when: str, *, delivered: str | None) -> None:
        sender, recipient, item_id = f"{case_id}-O", f"{case_id}-V", f"{case_id}-L1"
        at = utc(when)
        self.add(
            IndirectItemSubmitted(case_id=case_id, item_id=item_id, sender_id=sender, recipient_id=recipient,
                                  kind=IndirectItemKind.letter, content="Sorry", submitted_at=at, submitted_by=STAFF),
            at,
        )  # fmt: skip
        self.add(IndirectItemApproved(case_id=case_id, item_id=item_id, approved_at=at, approved_by=STAFF), at)
        if delivered:
            self.add(
                IndirectItemReleased(case_id=case_id, item_id=item_id, recipient_id=recipient, sender_id=sender,
                                     kind=IndirectItemKind.letter, content="Sorry", trigger=ReleaseTrigger.decision,
                                     released_at=at, released_by=STAFF),
                at,
            )  # fmt: skip
            self.add(
                IndirectItemDelivered(case_id=case_id, item_id=item_id, recipient_id=recipient,
                                      delivered_at=utc(delivered), recorded_at=utc(delivered), recorded_by=STAFF),
                utc(delivered),
            )  # fmt: skip

    def closed(self, case_id: str, reason: ClosureReason, when: str) -> None:
        self.add(CaseClosed(case_id=case_id, reason=reason, closed_at=utc(when), closed_by=STAFF), utc(when))

    def survey(self, case_id: str, who: str, role: Role, satisfied: bool, when: str) -> None:
        at = utc(when)
        self.add(
            SurveyResponseRecorded(case_id=case_id, person_id=who, role=role, satisfied=satisfied,
                                   score=5 if satisfied else 2, comments="Private words", responded_at=at,
                                   recorded_at=at, recorded_by=STAFF),
            at,
        )  # fmt: skip

    def reoffence(self, case_id: str, who: str, when: str, *, completed: bool, screened_out: bool = False) -> None:
        at = utc(when)
        self.add(
            ReoffenceRecorded(
                case_id=case_id, crime_reference=f"CR/{case_id}", force=self.force[case_id], person_id=who,
                later_crime_reference=f"LATER/{who}/{when}", offence_date=at.date() - timedelta(days=3),
                later_outcome=Outcome.convicted,
                ended_as=EarlierCaseEnded.screened_out if screened_out else EarlierCaseEnded.closed,
                closure_reason=None if screened_out else (ClosureReason.completed if completed else
                                                          ClosureReason.withdrawn),
                decline_reason=DeclineReason.offender_denies_responsibility if screened_out else None,
                rj_completed=completed, recorded_at=at, decided_by=STAFF,
            ),
            at,
        )  # fmt: skip


def pair(case_id: str, victim: tuple[str | None, str, str], offender: tuple[str | None, str, str]) -> list[Person]:
    return [Person(f"{case_id}-V", Role.victim, *victim), Person(f"{case_id}-O", Role.offender, *offender)]


def seeded() -> list[CloudEvent[Any]]:
    f = Facts()
    vic = ("25-34", F, W1)

    f.opened("A01", "2025-01-06", VAP, pair("A01", vic, ("25-34", M, W1)))
    f.information("A01", "2025-01-13", given="2025-01-10")
    f.meeting("A01", MeetingKind.conference, "2025-01-25", held="2025-02-03")
    f.agreement("A01", "2025-02-03", {"i1": "2025-02-10", "i2": "2025-02-20"})
    f.item_done("A01", "i1", "2025-02-09")
    f.item_done("A01", "i2", "2025-02-18")
    f.closed("A01", ClosureReason.completed, "2025-03-20")
    f.survey("A01", "A01-V", Role.victim, True, "2025-03-22")
    f.survey("A01", "A01-O", Role.offender, False, "2025-03-22")
    f.reoffence("A01", "A01-O", "2025-04-20", completed=True)

    a02 = [Person("A02-V", Role.victim, *vic), Person("A02-Oa", Role.offender, "18-24", M, A1),
           Person("A02-Ob", Role.offender, "18-24", M, A1)]  # fmt: skip
    f.opened("A02", "2025-01-09", VAP, a02)
    f.information("A02", "2025-01-16", given="2025-01-14")
    f.meeting("A02", MeetingKind.conference, "2025-01-20", held="2025-02-01")
    f.agreement("A02", "2025-02-01", {"i4": "2025-02-05", "i5": "2025-03-31"})
    f.item_done("A02", "i4", "2025-02-04")
    f.item_done("A02", "i5", "2025-03-24")  # done a week early: still due in March
    f.closed("A02", ClosureReason.completed, "2025-03-25")
    f.survey("A02", "A02-V", Role.victim, True, "2025-03-27")
    f.reoffence("A02", "A02-Ob", "2025-05-01", completed=True)
    f.reoffence("A02", "A02-Ob", "2025-06-01", completed=True)

    f.opened("A03", "2025-01-14", THEFT, pair("A03", ("35-44", F, W1), ("25-34", M, W1)))
    f.information("A03", "2025-01-21", given="2025-01-20")
    f.letter("A03", "2025-02-05", delivered="2025-02-10")
    f.closed("A03", ClosureReason.completed, "2025-02-20")
    f.survey("A03", "A03-V", Role.victim, True, "2025-02-25")

    f.opened("A04", "2025-01-20", VAP, pair("A04", ("35-44", F, W1), ("45-54", M, B1)))
    f.information("A04", "2025-01-27", given="2025-01-22")
    f.meeting("A04", MeetingKind.conference, "2025-02-01", cancelled="2025-02-15")
    f.closed("A04", ClosureReason.withdrawn, "2025-02-15")
    f.reoffence("A04", "A04-O", "2025-04-01", completed=False)

    f.opened("A05", "2025-01-31 23:59:59", THEFT, pair("A05", ("25-34", F, A1), ("25-34", M, W1)))
    f.information("A05", "2025-02-07", given="2025-02-03")
    f.closed("A05", ClosureReason.not_suitable, "2025-03-05")

    f.opened("A06", "2025-02-03", VAP, pair("A06", ("35-44", F, W1), ("25-34", M, W1)))
    f.information("A06", "2025-02-10", given="2025-02-05")
    f.meeting("A06", MeetingKind.conference, "2025-02-20", held="2025-03-01")
    f.agreement("A06", "2025-03-01", {"i6": "2025-03-20"})
    f.item_done("A06", "i6", "2025-03-19")
    f.closed("A06", ClosureReason.completed, "2025-03-28")
    f.survey("A06", "A06-V", Role.victim, False, "2025-03-29")

    f.opened("A07", "2025-02-07", THEFT, pair("A07", ("35-44", F, W1), ("18-24", NB, M1)))
    f.information("A07", "2025-02-14", given="2025-02-10")
    f.letter("A07", "2025-02-25", delivered="2025-03-01")
    f.closed("A07", ClosureReason.completed, "2025-03-12")
    f.survey("A07", "A07-V", Role.victim, True, "2025-03-31 23:00:00")  # 00:00 BST on 1 April: April's

    f.opened("A08", "2025-02-11", VAP, pair("A08", ("45-54", F, B1), ("25-34", M, W1)))
    f.information("A08", "2025-02-18", given="2025-02-12")
    f.letter("A08", "2025-03-01", delivered=None)  # approved, never delivered: not indirect RJ

    f.opened("A09", "2025-02-14", THEFT, pair("A09", ("35-44", F, A1), ("18-24", M, A1)))
    f.information("A09", "2025-02-21", given="2025-02-24", on_time=False)
    f.meeting("A09", MeetingKind.indirect, "2025-02-25", held="2025-03-01")  # not a conference: not direct RJ
    f.agreement("A09", "2025-03-01", {"i3": "2025-03-15", "i7": "2025-03-25", "i8": "2025-04-10"})
    f.add(AgreementItemOverdue(case_id="A09", item_id="i3", kind=ItemKind.apology, due_date=date(2025, 3, 15),
                               tell_person_ids=["A09-V"], flagged_at=utc("2025-03-16"), flagged_by=STAFF),
          utc("2025-03-16"))  # fmt: skip
    f.add(AgreementItemDueSoon(case_id="A09", item_id="i7", kind=ItemKind.apology, owner_id="A09-O",
                               due_date=date(2025, 3, 25), flagged_at=utc("2025-03-20"), flagged_by=STAFF),
          utc("2025-03-20"))  # fmt: skip
    f.item_done("A09", "i8", "2025-04-08")

    f.opened("A10", "2025-02-18", VAP, pair("A10", (None, F, W1), ("25-34", M, B1)))
    f.information("A10", "2025-02-25", overdue="2025-02-26", given="2025-02-27", on_time=False)

    f.opened("A11", "2025-02-21", DAMAGE, pair("A11", ("45-54", F, W1), (None, NB, M1)))
    f.information("A11", "2025-02-28", overdue="2025-03-01")
    declined = utc("2025-02-28 12:00:00")
    f.add(CaseDeclined(case_id="A11", crime_reference="CR/A11", force=FORCE,
                       reason=DeclineReason.offender_denies_responsibility, detail="denies it", decided_at=declined,
                       decided_by=STAFF), declined)  # fmt: skip
    f.reoffence("A11", "A11-O", "2025-04-05", completed=False, screened_out=True)
    f.reoffence("A11", "A11-O", "2025-05-05", completed=False, screened_out=True)

    f.opened("A12", "2025-03-31 22:59:59", VAP, pair("A12", ("35-44", F, W1), ("25-34", M, W1)))
    f.information("A12", "2025-04-07", given="2025-04-02")

    f.opened("A13", "2025-03-31 23:00:00", THEFT, pair("A13", vic, ("25-34", M, W1)))
    f.information("A13", "2025-04-07")  # still running

    # Another force's: a referral of each kind of figure, in the same months.
    f.opened("B01", "2025-01-10", VAP, pair("B01", vic, ("25-34", M, W1)), force=OTHER_FORCE)
    f.information("B01", "2025-01-17", overdue="2025-01-18")
    f.meeting("B01", MeetingKind.conference, "2025-01-20", held="2025-02-01")
    f.agreement("B01", "2025-02-01", {"b1": "2025-02-10"})
    f.item_done("B01", "b1", "2025-02-09")
    f.closed("B01", ClosureReason.completed, "2025-02-20")
    f.survey("B01", "B01-V", Role.victim, True, "2025-02-22")
    f.reoffence("B01", "B01-O", "2025-03-01", completed=True)
    f.opened("B02", "2025-01-12", THEFT, pair("B02", vic, ("25-34", M, W1)), force=OTHER_FORCE)
    f.letter("B02", "2025-01-30", delivered="2025-02-01")
    return f.events


# --- the figures by hand ----------------------------------------------------------------------------------------
# Per period: referrals; direct RJ (conferences held) and indirect RJ (items delivered) among them; agreement items
# (completed, due); victims' survey answers (satisfied, answers); RJ information (due, on time, late, overdue,
# pending); reoffending of completed cases and of those that did not proceed (cases, offenders, reoffended, later
# offences), by the period the case ended.

# Counts of people per period (victims' answers, offenders) are withheld as lines over the periods adding up to the
# whole range (figures.withheld_cells): what the months hold by hand is in the comments, what shows (None: withheld)
# in the constants. Over January to May, victims' answers are 0, 1, 3, 1, 0 (all under 5, all withheld; the range's 5
# shows) and satisfied 0, 1, 2, 1, 0 (withheld; the range's 4 too). Completed cohorts' offenders 0, 1, 5, 0, 0: four
# small ones hold 1, so March's 5 goes with them (the range's 6 shows); reoffended 0, 0, 2, 0, 0 and the range's 2
# are withheld, later offences with them. Those that did not proceed: 0, 2, 1, 0, 0 offenders, the range's 3: all
# withheld.
MONTHS = {
    # January: A01-A05 (A05 at 23:59:59 GMT on the 31st); conferences A01, A02; letter A03. RJ information A01-A04.
    "2025-01": dict(referrals=5, direct=2, indirect=1, items=(0, 0), satisfied=(None, None), info=(4, 4, 0, 0, 0),
                    completed=(0, None, None, None), did_not_proceed=(0, None, None, None)),
    # February: A06-A11; conference A06; letter A07 (A08's never delivered; A09's meeting was indirect). Items i1, i2,
    # i4 due and done. A03's victim satisfied. RJ information A05-A08 on time, A09 and A10 late, A11 overdue. Ended:
    # A03 completed (its offender has no later offence); A04 withdrawn and A11 screened out, both offenders reoffended,
    # A04's once and A11's twice.
    "2025-02": dict(referrals=6, direct=1, indirect=1, items=(3, 3), satisfied=(None, None), info=(7, 4, 2, 1, 0),
                    completed=(1, None, None, None), did_not_proceed=(2, None, None, None)),
    # March: A12 (23:59:59 BST on the 31st). Items i3 (overdue), i5, i6 (done), i7 (open). Victims A01, A02
    # satisfied, A06 not (A01's offender's answer is not a victim's). Ended completed: A07, A01, A02 (two offenders),
    # A06: five offenders, A01's reoffended once and A02-Ob twice; not proceeding: A05, whose offender did not.
    "2025-03": dict(referrals=1, direct=0, indirect=0, items=(2, 4), satisfied=(None, None), info=(0, 0, 0, 0, 0),
                    completed=(4, None, None, None), did_not_proceed=(1, None, None, None)),
    # April: A13 (00:00:00 BST on the 1st). Item i8 done. A07's victim satisfied at 00:00 BST on the 1st. RJ
    # information A12 on time, A13 still running.
    "2025-04": dict(referrals=1, direct=0, indirect=0, items=(1, 1), satisfied=(None, None), info=(2, 1, 0, 0, 1),
                    completed=(0, None, None, None), did_not_proceed=(0, None, None, None)),
    # May: nothing at all.
    "2025-05": dict(referrals=0, direct=0, indirect=0, items=(0, 0), satisfied=(None, None), info=(0, 0, 0, 0, 0),
                    completed=(0, None, None, None), did_not_proceed=(0, None, None, None)),
}  # fmt: skip

# By quarter: answers 4 and 1 (withheld; the range's 5 shows), satisfied 3 and 1 (withheld, and the range's 4).
# Completed offenders 6 and 0: the 0 is small, so the 6 goes with it (the range's 6 shows, and tells neither);
# reoffended 2 and 0, and the range's 2: withheld. Did not proceed: 3 and 0 offenders, the range's 3: withheld.
QUARTERS = {
    # Q1: 12 referrals, 3 conferences (25.0%), 2 indirect (16.7%); 7 items due, 5 done (71.4%); 4 victims' answers, 3
    # satisfied (75.0%); RJ information 11 due, 8 on time (72.7%), 2 late, 1 overdue; completed: 5 cases, 6 offenders,
    # 2 reoffended (33.3%), 3 later offences (0.50 each); did not proceed: 3 cases, 3 offenders, 2 reoffended (66.7%),
    # 3 later offences (1.00 each).
    "2025-Q1": dict(referrals=12, direct=3, indirect=2, items=(5, 7), satisfied=(None, None), info=(11, 8, 2, 1, 0),
                    completed=(5, None, None, None), did_not_proceed=(3, None, None, None)),
    # Q2: A13 only; i8 done; A07's victim satisfied; RJ information A12 on time, A13 pending (100.0% of those ended).
    "2025-Q2": dict(referrals=1, direct=0, indirect=0, items=(1, 1), satisfied=(None, None), info=(2, 1, 0, 0, 1),
                    completed=(0, None, None, None), did_not_proceed=(0, None, None, None)),
}  # fmt: skip

# Force B sees only its own: January's two referrals (a conference, a letter), February's item, answer and completed
# case (whose offender reoffended), and January's overdue RJ information.
# (One answer, one offender who reoffended: withheld, in each month and in the range.)
OTHER_FORCES_MONTHS = {
    "2025-01": dict(referrals=2, direct=1, indirect=1, items=(0, 0), satisfied=(None, None), info=(1, 0, 0, 1, 0),
                    completed=(0, None, None, None), did_not_proceed=(0, None, None, None)),
    "2025-02": dict(referrals=0, direct=0, indirect=0, items=(1, 1), satisfied=(None, None), info=(0, 0, 0, 0, 0),
                    completed=(1, None, None, None), did_not_proceed=(0, None, None, None)),
}  # fmt: skip


def compact(period: dict[str, Any]) -> dict[str, Any]:
    """A period of the JSON answer in the shape of the constants above."""
    vc, reoffending = period["victims_code"], period["reoffending"]

    def cohort(c: dict[str, Any]) -> tuple[int, int, int, int]:
        return (c["cases"], c["offenders"], c["reoffended"], c["later_offences"])

    assert period["direct_rj"]["of"] == period["indirect_rj"]["of"] == period["referrals"]
    return dict(
        referrals=period["referrals"], direct=period["direct_rj"]["count"], indirect=period["indirect_rj"]["count"],
        items=(period["agreement_completion"]["count"], period["agreement_completion"]["of"]),
        satisfied=(period["victim_satisfaction"]["count"], period["victim_satisfaction"]["of"]),
        info=(vc["due"], vc["on_time"], vc["late"], vc["overdue"], vc["pending"]),
        completed=cohort(reoffending["completed"]), did_not_proceed=cohort(reoffending["did_not_proceed"]),
    )  # fmt: skip


# The breakdowns of Q1 (A01-A12: 12 victims, 13 offenders). By offence type: violence against the person A01, A02,
# A04, A06, A08, A10, A12 (conferences A01, A02, A06); theft A03, A05, A07, A09 (letters A03, A07); damage A11.
OFFENCE_TYPES = [(VAP, 7, 3, 0), (THEFT, 4, 0, 2), (DAMAGE, 1, 0, 0)]
OTHER = "Other (each fewer than 5 people)"
# People in a conference held: A01's two, A02's three, A06's two (7); in indirect RJ: A03's two, A07's two (4).
# Rows: (category, people, direct, indirect), None where fewer than 5 people are withheld; categories of fewer than
# 5 people are pooled into OTHER.
AGE_BANDS = [
    ("25-34", 10, None, None),  # direct: A01-V, A01-O, A02-V, A06-O (4); indirect: A03-O (1)
    ("35-44", 6, None, None),  # direct: A06-V (1); indirect: A03-V, A07-V (2)
    (OTHER, 9, None, None),  # 18-24 (4), 45-54 (3), not recorded (2); direct: A02-Oa, A02-Ob; indirect: A07-O
]
GENDERS = [
    (F, 12, None, None),  # direct 3, indirect 2
    (M, None, None, None),  # 11 people, withheld beside OTHER's 2 (else 25 - 12 - 11 = 2); direct 4, indirect 1
    (OTHER, None, None, None),  # non-binary: A07-O, A11-O (2); indirect: A07-O
]
ETHNICITIES = [
    # direct: A01-V, A01-O, A02-V, A06-V, A06-O (5), withheld: A1's 2 and OTHER's 0 hold only 2 (7 - 5 would say who
    # they are); indirect: A03-V, A03-O, A07-V (3)
    (W1, 15, None, None),
    (A1, 5, None, None),  # A02-Oa, A02-Ob, A05-V, A09-V, A09-O; direct: A02-Oa, A02-Ob (2)
    (OTHER, 5, None, None),  # B1 (3) and M1 (2); direct 0; indirect: A07-O
]
WITHHELD_NAMES = ("18-24", "45-54", NB, B1, M1, "Not recorded")
"""Categories with fewer than 5 people: pooled, so their names appear nowhere."""


# --- the system under test ----------------------------------------------------------------------------------------


@dataclass
class Figures:
    client: httpx.AsyncClient
    issuer: LocalIssuer
    pool: asyncpg.Pool

    def token(self, role: StaffRole = StaffRole.coordinator, force: str = FORCE) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.issuer.mint('S-1', role, force)}"}

    async def json(self, query: str, **kw: Any) -> dict[str, Any]:
        answer = await self.client.get(f"/figures?{query}", headers=self.token(**kw))
        assert answer.status_code == 200, answer.text
        return answer.json()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
async def figures_api(pg_server: str, issuer: LocalIssuer) -> AsyncIterator[Figures]:
    """One read model for the module, folded once: the tests only read it (the migration's test empties the figures'
    columns and proves the migration fills them again as they were)."""
    name = f"rj_test_figures_{datetime.now(UTC).strftime('%H%M%S%f')}"
    url = await create_database(pg_server, name)
    pool = await create_pool(Settings(database_url=url, db_pool_size=3))
    async with pool.acquire() as conn:
        await migrate(conn, "api", "services.api.migrations")
        await ensure_schema(conn)
    before = privacy.installed()
    privacy.install(Privacy.from_settings(SETTINGS))
    with batch_scope():
        async with transaction(pool) as conn:
            await readmodel.take_in(conn, seeded())

    async def pool_source() -> asyncpg.Pool:
        return pool

    verifier = TokenVerifier(issuer=issuer.url, jwks_url=issuer.jwks_url, audience="rj-api")
    settings = Settings(database_url=url, participant_link_key=SecretStr(links.new_link_key()))
    app = create_app(pool=pool_source, verifier=verifier, settings=settings)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://api") as client:
            yield Figures(client, issuer, pool)
    finally:
        privacy.install(before)
        await pool.close()
        await drop_database(pg_server, name)


# --- the page, read as a browser's accessibility tree would ---------------------------------------------------------


class Page(HTMLParser):
    """The tables by id (their body rows' cell texts), the charts' names, and the text of the page."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.charts: list[str] = []
        self.ids: dict[str, str] = {}
        self.text: list[str] = []
        self._table: str | None = None
        self._in_body = False
        self._cell: list[str] | None = None
        self._svg_title = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self._table = a.get("id") or ""
            self.tables[self._table] = []
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._table is not None and self._in_body:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table is not None and self._in_body:
            self._cell = []
        elif tag == "svg":
            assert a.get("role") == "img" and a.get("aria-labelledby"), "every chart is an image with a name"
        elif tag == "title" and (a.get("id") or "").startswith("chart-"):
            self._svg_title = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        elif tag == "tbody":
            self._in_body = False
        elif tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "title":
            self._svg_title = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)
        if self._svg_title:
            self.charts.append(data.strip())

    @property
    def words(self) -> str:
        return " ".join("".join(self.text).split())


def csv_values(text: str) -> dict[tuple[str, str, str], str]:
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows and list(rows[0]) == ["period", "first_day", "last_day", "financial_quarter", "measure", "category",
                                      "value"]  # fmt: skip
    values = {(r["period"], r["measure"], r["category"]): r["value"] for r in rows}
    assert len(values) == len(rows), "each (period, measure, category) once"
    return values


# --- the tests ----------------------------------------------------------------------------------------------------


async def test_monthly_figures_are_those_worked_out_by_hand_with_the_boundaries_in_uk_time(
    figures_api: Figures,
) -> None:
    shown = await figures_api.json("period=month&from=2025-01-15&to=2025-05-02")
    assert (shown["period"], shown["first_day"], shown["last_day"]) == ("month", "2025-01-01", "2025-05-31")
    assert [p["key"] for p in shown["periods"]] == list(MONTHS)
    assert [p["label"] for p in shown["periods"]] == ["January 2025", "February 2025", "March 2025", "April 2025",
                                                      "May 2025"]  # fmt: skip
    assert {p["key"]: compact(p) for p in shown["periods"]} == MONTHS
    january, february, march, april, may = shown["periods"]
    assert january["direct_rj"]["rate"] == 2 / 5 and january["indirect_rj"]["rate"] == 1 / 5
    assert february["victims_code"]["rate"] == 4 / 7
    assert february["reoffending"]["did_not_proceed"]["frequency"] is None  # 3 later offences of 2 offenders: withheld
    assert march["agreement_completion"]["rate"] == 2 / 4 and march["victim_satisfaction"]["rate"] is None
    assert march["reoffending"]["completed"]["rate"] is None and march["reoffending"]["completed"]["frequency"] is None
    assert april["victims_code"]["rate"] == 1 / 1  # the pending clock is not a failure
    # An empty period: every count 0, and no rate where there is nothing to divide by.
    assert may["direct_rj"] == {"count": 0, "of": 0, "rate": None}
    assert may["victims_code"]["rate"] is None and may["reoffending"]["completed"]["rate"] is None
    # The whole range is the sum of its months.
    assert compact(shown["total"]) == dict(
        referrals=13, direct=3, indirect=2, items=(6, 8), satisfied=(None, 5), info=(13, 9, 2, 1, 1),
        completed=(5, 6, None, None), did_not_proceed=(3, None, None, None),
    )  # fmt: skip


async def test_quarterly_figures_are_the_same_in_json_csv_and_on_the_page(figures_api: Figures) -> None:
    query = "period=quarter&from=2025-01-01&to=2025-06-30"
    shown = await figures_api.json(query)
    assert {p["key"]: compact(p) for p in shown["periods"]} == QUARTERS
    q1, q2 = shown["periods"]
    assert (q1["label"], q1["financial_quarter"], q2["financial_quarter"]) == ("Jan–Mar 2025", "2024/25 Q4",
                                                                               "2025/26 Q1")  # fmt: skip
    assert (q1["direct_rj"]["rate"], q1["indirect_rj"]["rate"]) == (3 / 12, 2 / 12)
    assert (q1["agreement_completion"]["rate"], q1["victim_satisfaction"]["rate"]) == (5 / 7, None)
    assert q1["victims_code"]["rate"] == 8 / 11
    assert q1["reoffending"]["label"] == "self-selected, not a controlled comparison"
    assert (q1["reoffending"]["completed"]["rate"], q1["reoffending"]["completed"]["frequency"]) == (None, None)
    assert (q1["reoffending"]["did_not_proceed"]["rate"], q1["reoffending"]["did_not_proceed"]["frequency"]) == (
        None, None,
    )  # fmt: skip
    assert [(n["measure"], n["value"]) for n in shown["national"]] == [
        ("victim_satisfaction", 0.85), ("reoffending_frequency_reduction", 0.14),
    ]  # fmt: skip

    answer = await figures_api.client.get(f"/figures.csv?{query}", headers=figures_api.token())
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/csv")
    assert 'filename="rj-figures-quarter-2025-01-01-to-2025-06-30.csv"' in answer.headers["content-disposition"]
    cells = csv_values(answer.text)
    expected_q1 = {
        "referrals": "12", "direct_rj": "3", "direct_rj_rate_percent": "25.0", "indirect_rj": "2",
        "indirect_rj_rate_percent": "16.7", "agreement_items_due": "7", "agreement_items_completed": "5",
        "agreement_completion_rate_percent": "71.4", "victim_survey_responses": "[c]", "victims_satisfied": "[c]",
        "victim_satisfaction_rate_percent": "", "victims_code_information_due": "11",
        "victims_code_information_on_time": "8", "victims_code_information_late": "2",
        "victims_code_information_overdue": "1", "victims_code_information_pending": "0",
        "victims_code_compliance_rate_percent": "72.7", "reoffending_completed_cases": "5",
        "reoffending_completed_offenders": "[c]", "reoffending_completed_reoffended": "[c]",
        "reoffending_completed_later_offences": "[c]", "reoffending_completed_rate_percent": "",
        "reoffending_completed_frequency": "", "reoffending_did_not_proceed_cases": "3",
        "reoffending_did_not_proceed_offenders": "[c]", "reoffending_did_not_proceed_reoffended": "[c]",
        "reoffending_did_not_proceed_later_offences": "[c]", "reoffending_did_not_proceed_rate_percent": "",
        "reoffending_did_not_proceed_frequency": "",
    }  # fmt: skip
    assert {m: cells[("2025-Q1", m, "")] for m in expected_q1} == expected_q1
    assert cells[("2025-Q2", "referrals", "")] == "1"
    assert cells[("2025-Q2", "direct_rj_rate_percent", "")] == "0.0"
    assert cells[("2025-Q2", "victims_code_information_pending", "")] == "1"
    assert cells[("2025-Q2", "reoffending_completed_rate_percent", "")] == ""  # no offenders: nothing to divide
    assert cells[("total", "referrals", "")] == "13"
    assert cells[("total", "national_victim_satisfaction_percent", shown["national"][0]["source"])] == "85.0"
    assert "Research Series 3/07" in shown["national"][0]["source"]
    assert "Research Series 10/08" in shown["national"][1]["source"]

    page = await figures_api.client.get(f"/console/figures?{query}", headers=figures_api.token())
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src" not in page.headers["content-security-policy"] and "<script" not in page.text
    html = Page(page.text)
    assert html.tables["table-referrals"] == [["Jan–Mar 2025", "12"], ["Apr–Jun 2025", "1"], ["Whole range", "13"]]
    assert html.tables["table-direct-rj"][0] == ["Jan–Mar 2025", "3", "12", "25.0%"]
    assert html.tables["table-indirect-rj"][0] == ["Jan–Mar 2025", "2", "12", "16.7%"]
    assert html.tables["table-agreement-completion"][0] == ["Jan–Mar 2025", "5", "7", "71.4%"]
    assert html.tables["table-victim-satisfaction"] == [
        ["Jan–Mar 2025", "[c]", "[c]", "n/a"], ["Apr–Jun 2025", "[c]", "[c]", "n/a"],
        ["Whole range", "[c]", "5", "n/a"],
    ]  # fmt: skip
    assert html.tables["table-victims-code"][:2] == [
        ["Jan–Mar 2025", "8", "2", "1", "0", "11", "72.7%"], ["Apr–Jun 2025", "1", "0", "0", "1", "2", "100.0%"],
    ]  # fmt: skip
    assert html.tables["table-reoffending"] == [
        ["Completed RJ", "5", "6", "[c]", "[c]", "n/a", "n/a"],
        ["Did not proceed", "3", "[c]", "[c]", "[c]", "n/a", "n/a"],
    ]  # fmt: skip
    assert len(html.charts) == 7 and "Victim satisfaction" in html.charts
    assert any("self-selected, not a controlled comparison" in title for title in html.charts)
    words = html.words
    assert "85%: 85% of victims who took part in a face-to-face conference were satisfied" in words
    assert "Research Series 3/07" in words and "14%: a 14% reduction in the frequency of reoffending" in words
    assert "Research Series 10/08" in words
    assert "National 85%" in page.text  # drawn across the satisfaction chart
    assert 'href="/console/figures.csv?period=quarter&amp;from=2025-01-01&amp;to=2025-06-30"' in page.text
    download = await figures_api.client.get("/console/figures.csv?period=quarter&from=2025-01-01&to=2025-06-30",
                                            headers=figures_api.token())  # fmt: skip
    assert download.status_code == 200 and download.text == answer.text


async def test_breakdowns_by_offence_type_and_monitoring_category_withhold_every_count_under_five_people(
    figures_api: Figures,
) -> None:
    query = "period=quarter&from=2025-02-01&to=2025-03-01"  # both in Q1: the breakdowns are Q1's
    shown = await figures_api.json(query)
    assert [p["key"] for p in shown["periods"]] == ["2025-Q1"]
    assert [(r["offence_type"], r["referrals"], r["direct_rj"]["count"], r["indirect_rj"]["count"])
            for r in shown["by_offence_type"]] == OFFENCE_TYPES  # fmt: skip
    monitoring = shown["by_monitoring"]
    assert monitoring["threshold"] == 5 and "fewer than 5 people" in monitoring["note"]
    for name, expected in (("age_band", AGE_BANDS), ("gender", GENDERS), ("ethnicity", ETHNICITIES)):
        rows = [(r["category"], r["people"], r["direct_rj"], r["indirect_rj"]) for r in monitoring[name]]
        assert rows == expected, name
    [white] = [r for r in monitoring["ethnicity"] if r["category"] == W1]
    assert (white["direct_rj_rate"], white["indirect_rj_rate"]) == (None, None)  # no rate from a withheld count

    cells = csv_values((await figures_api.client.get(f"/figures.csv?{query}", headers=figures_api.token())).text)
    assert cells[("total", "people_by_ethnicity", W1)] == "15"
    assert cells[("total", "direct_rj_people_by_ethnicity", W1)] == "[c]"
    assert cells[("total", "indirect_rj_people_by_ethnicity", W1)] == "[c]"
    assert cells[("total", "people_by_gender", OTHER)] == "[c]"
    assert cells[("total", "people_by_gender", M)] == "[c]"
    assert cells[("total", "referrals_by_offence_type", THEFT)] == "4"

    page = await figures_api.client.get(f"/console/figures?{query}", headers=figures_api.token())
    html = Page(page.text)
    assert html.tables["table-monitoring-ethnicity"] == [
        [W1, "15", "[c]", "n/a", "[c]", "n/a"],
        [A1, "5", "[c]", "n/a", "[c]", "n/a"],
        [OTHER, "5", "[c]", "n/a", "[c]", "n/a"],
    ]  # fmt: skip
    assert html.tables["table-monitoring-gender"][-1] == [OTHER, "[c]", "[c]", "n/a", "[c]", "n/a"]
    assert html.tables["table-offence-type"][1] == [THEFT, "4", "0", "0.0%", "2", "50.0%"]
    assert "a count of fewer than 5 people is not shown" in html.words

    # Nothing shown is one person's: no pooled category's name, no name, id or survey comment of anyone.
    for text in (str(shown), page.text, str(cells)):
        for withheld in (*WITHHELD_NAMES, "Name of", "A01-V", "A02-Ob", "Private words", "LATER/"):
            assert withheld not in text, withheld


def unknown_cells(cells: list[int | None], total: int | None) -> list[int]:
    """The withheld cells (indexes) of a line adding up to ``total``, if subtraction tells any: the only one withheld,
    or all of them when the cells shown already make the total. A total withheld (None) tells nothing."""
    withheld = [i for i, cell in enumerate(cells) if cell is None]
    if total is None or not withheld:
        return []
    left = total - sum(cell for cell in cells if cell is not None)
    return withheld if len(withheld) == 1 or left == 0 else []


@pytest.mark.parametrize(
    "query", ["period=month&from=2025-01-01&to=2025-05-31", "period=quarter&from=2025-01-01&to=2025-06-30",
              "period=month&from=2025-02-01&to=2025-04-30"],
)  # fmt: skip
async def test_no_withheld_count_can_be_worked_out_by_subtraction_from_the_same_table_or_the_whole_range(
    figures_api: Figures, query: str
) -> None:
    """As someone reading the answer would: each monitoring column against the same column of the breakdown that
    shows it whole (everyone is in every breakdown), and each period's people counts against the whole range's."""
    shown = await figures_api.json(query)
    monitoring = shown["by_monitoring"]
    for column in ("people", "direct_rj", "indirect_rj"):
        lines = [[row[column] for row in monitoring[name]] for name in ("age_band", "gender", "ethnicity")]
        totals = {sum(cell for cell in line if cell is not None) for line in lines if None not in line}
        assert len(totals) <= 1, column  # every breakdown counts the same people
        for line in lines:
            assert unknown_cells(line, next(iter(totals), None)) == [], (column, line)
    periods, whole = shown["periods"], shown["total"]
    for name, pick in (
        ("answers", lambda p: p["victim_satisfaction"]["of"]),
        ("satisfied", lambda p: p["victim_satisfaction"]["count"]),
        ("completed offenders", lambda p: p["reoffending"]["completed"]["offenders"]),
        ("completed reoffended", lambda p: p["reoffending"]["completed"]["reoffended"]),
        ("completed later offences", lambda p: p["reoffending"]["completed"]["later_offences"]),
        ("did not proceed offenders", lambda p: p["reoffending"]["did_not_proceed"]["offenders"]),
        ("did not proceed reoffended", lambda p: p["reoffending"]["did_not_proceed"]["reoffended"]),
    ):
        cells = [pick(p) for p in periods]
        assert unknown_cells(cells, pick(whole)) == [], (name, cells, pick(whole))
        assert all(cell is None or cell >= 5 for cell in [*cells, pick(whole)]), name
    for p in [*periods, whole]:  # ... nor a count from what it leaves of its whole (answers not satisfied, ...)
        survey = p["victim_satisfaction"]
        if None not in (survey["count"], survey["of"]):
            assert survey["of"] - survey["count"] >= 5 or survey["of"] == 0
        for cohort in p["reoffending"].values():
            if isinstance(cohort, dict) and None not in (cohort["offenders"], cohort["reoffended"]):
                assert cohort["offenders"] - cohort["reoffended"] >= 5 or cohort["offenders"] == 0


async def test_another_forces_cases_are_never_counted(figures_api: Figures) -> None:
    theirs = await figures_api.json("period=month&from=2025-01-01&to=2025-02-28", force=OTHER_FORCE)
    assert {p["key"]: compact(p) for p in theirs["periods"]} == OTHER_FORCES_MONTHS
    assert theirs["force"] == OTHER_FORCE
    # ... and a force with no cases at all sees only zeros.
    nobody = await figures_api.json("period=quarter&from=2025-01-01&to=2025-03-31", force="urn:police:none:rms")
    assert nobody["total"]["referrals"] == 0 and nobody["by_offence_type"] == []
    assert all(nobody["by_monitoring"][name] == [] for name in ("age_band", "gender", "ethnicity"))


@pytest.mark.parametrize("role", [StaffRole.coordinator, StaffRole.auditor])
async def test_coordinators_and_auditors_see_the_figures(figures_api: Figures, role: StaffRole) -> None:
    for path in ("/figures", "/figures.csv", "/console/figures", "/console/figures.csv"):
        answer = await figures_api.client.get(f"{path}?period=month&from=2025-01-01&to=2025-01-31",
                                              headers=figures_api.token(role))  # fmt: skip
        assert answer.status_code == 200, (path, answer.text)


@pytest.mark.parametrize("role", [StaffRole.facilitator, StaffRole.volunteer])
async def test_facilitators_and_volunteers_are_refused_the_figures(figures_api: Figures, role: StaffRole) -> None:
    for path in ("/figures", "/figures.csv", "/console/figures", "/console/figures.csv"):
        answer = await figures_api.client.get(path, headers=figures_api.token(role))
        assert answer.status_code == 403, (path, answer.text)
        assert answer.json() == {"error": "forbidden", "detail": "the figures are for coordinators and auditors"}
    assert (await figures_api.client.get("/figures")).status_code == 401


@pytest.mark.parametrize(
    ("query", "why"),
    [
        ("period=month&from=2025-05-01&to=2025-01-01", "'from' is after 'to'"),
        ("period=month&from=2000-01-01&to=2025-01-01", "at most 120 periods at a time"),
        ("period=quarter&from=1999-12-31&to=2025-01-01", "dates must be between 2000-01-01 and 2099-12-31"),
        ("period=quarter&to=9999-12-31", "dates must be between 2000-01-01 and 2099-12-31"),
        ("period=week", "query.period"),
        ("from=2025-02-30", "query.from"),
    ],
)
async def test_a_range_that_cannot_be_answered_is_refused_with_the_reason(
    figures_api: Figures, query: str, why: str
) -> None:
    for path in ("/figures", "/figures.csv", "/console/figures"):
        answer = await figures_api.client.get(f"{path}?{query}", headers=figures_api.token())
        assert answer.status_code == 422, (path, answer.text)
        assert answer.json()["error"] == "invalid" and why in answer.json()["detail"]


async def test_without_a_range_the_last_four_quarters_to_today_are_shown(figures_api: Figures) -> None:
    shown = await figures_api.json("")
    assert shown["period"] == "quarter" and len(shown["periods"]) == 4
    today = datetime.now(UTC).date()
    assert date.fromisoformat(shown["first_day"]) <= today - timedelta(days=270)
    assert date.fromisoformat(shown["last_day"]) >= today - timedelta(days=1)


async def test_the_migration_fills_the_figures_of_facts_folded_before_it_from_the_timeline(
    figures_api: Figures,
) -> None:
    query = "period=month&from=2025-01-01&to=2025-05-31"
    before = await figures_api.json(query)
    async with figures_api.pool.acquire() as conn, conn.transaction():
        # The read model as it was before migration 017: none of what the figures need besides the pages.
        await conn.execute("UPDATE api.cases SET declined_at = NULL")
        await conn.execute("UPDATE api.meetings SET held_at = NULL")
        await conn.execute("UPDATE api.deadlines SET on_time = NULL")
        await conn.execute("DELETE FROM api.survey_responses")
        await conn.execute("DELETE FROM api.reoffences")
    emptied = await figures_api.json(query)
    assert before["total"]["victim_satisfaction"]["of"] == 5  # shown, and after the emptying 0, which is withheld
    assert emptied["total"]["direct_rj"]["count"] == 0 and emptied["total"]["victim_satisfaction"]["of"] is None
    async with figures_api.pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL search_path TO api")
        await conn.execute(MIGRATION.read_text().replace("{schema}", "api"))
    assert await figures_api.json(query) == before
