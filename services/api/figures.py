"""The service's own figures (DOMAIN stage 7 and "Where the figures come from"), per month or quarter, for one force:
what ``GET /figures``, ``GET /figures.csv`` (the Police and Crime Commissioner's quarterly return) and the console's
figures page show (``services.api.figures_http``).

Every figure is a count of things that fall in one period, so periods never overlap and the whole range is their sum:

- **referrals**: cases opened in the period (``rj.case.opened``, by ``opened_at``);
- **conversion**: of those referrals, how many went on (so far) to direct RJ (a conference held) and to indirect RJ
  (an indirect item delivered); a case may be in both;
- **agreement completion**: agreement items falling due in the period (by due date), and how many are completed;
- **victim satisfaction**: victims' survey answers given in the period, and how many said they were satisfied;
- **Victims' Code compliance**: victims whose RJ information fell due in the period (by due date), and how many got it
  on time; a clock still running (neither given nor flagged overdue) is counted as pending, not as a failure;
- **reoffending**: offenders of the cases that ended in the period (closed, or declined at screening), split into
  cases closed as completed and cases that did not proceed to completion, with how many of them a later offence was
  recorded against (``rj.case.reoffence-recorded``, so far) and how many later offences. The two groups chose
  themselves: it is a self-selected comparison, not a controlled one, and is labelled so wherever it is shown.

Breakdowns cover the whole range: referrals and conversion by offence type, and people (victims and offenders of the
range's referrals) by the monitoring categories (age band, gender, ethnicity). Monitoring values are sealed under each
case's monitoring key; they are opened here, in memory, only to be counted, and only counts leave: a category with
fewer than ``SUPPRESS_BELOW`` people is pooled into one "other" row (its name says who someone is as much as a count
does), and any count under ``SUPPRESS_BELOW`` is withheld (``None``).

Withholding a small count is not enough when the cells add up to a total someone can see: a single withheld cell is
the total less the cells shown. So every line of cells that adds up (a monitoring column over its categories, a
per-period measure over the periods) is withheld by ``withheld_cells``: the small counts first, then the next
smallest, until at least two are withheld and they hold at least ``SUPPRESS_BELOW`` between them. The people counts
of each period (victims' survey answers, offenders of the reoffending cohorts) get the same treatment, and a count
whose complement is small (7 answers of which 6 satisfied says one victim was not) is withheld as a small count.

Periods are months or calendar quarters in UK local time (Europe/London): a case opened at 23:59:59 on 31 March
(British Summer Time) is in the first quarter, one opened a second later in the second.
"""

from __future__ import annotations

import bisect
import csv
import io
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from pydantic import BaseModel, ConfigDict, Field

from schemas.referral import AgeBand, Participant
from services.runtime import privacy
from services.runtime.fieldcrypt import is_token

ZONE = ZoneInfo("Europe/London")
SUPPRESS_BELOW = 5
"""A count of people under this is withheld, and a monitoring category with fewer people is pooled."""
MAX_PERIODS = 120
"""The most periods one request may ask for (ten years of months): a bound on the work one request can make."""
EARLIEST = date(2000, 1, 1)
LATEST = date(2099, 12, 31)
"""The dates a range may name: cases are opened in this century, and nothing outside it is worth computing."""

OTHER = "Other (each fewer than 5 people)"
NOT_RECORDED = "Not recorded"
SELF_SELECTED = "self-selected, not a controlled comparison"
MONITORING = ("age_band", "gender", "ethnicity")
"""The monitoring categories of ``schemas.referral.Participant`` (sealed under the case's monitoring key)."""
_AGE_ORDER = [band.value for band in AgeBand]
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NAMES = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November",
    "December",
)  # fmt: skip


class FiguresRangeError(ValueError):
    """A range that cannot be answered (ends before it starts, too long, out of bounds); ``str()`` says why."""


# --- periods ---------------------------------------------------------------------------------------------------


class PeriodKind(StrEnum):
    month = "month"
    quarter = "quarter"


@dataclass(frozen=True, slots=True)
class Period:
    """One month or calendar quarter, its days in UK local time."""

    kind: PeriodKind
    first_day: date
    last_day: date

    @classmethod
    def containing(cls, kind: PeriodKind, day: date) -> Period:
        first_month = day.month if kind is PeriodKind.month else 3 * ((day.month - 1) // 3) + 1
        first = date(day.year, first_month, 1)
        months = 1 if kind is PeriodKind.month else 3
        following = _add_months(first, months)
        return cls(kind, first, following - timedelta(days=1))

    def next(self) -> Period:
        return Period.containing(self.kind, self.last_day + timedelta(days=1))

    def previous(self) -> Period:
        return Period.containing(self.kind, self.first_day - timedelta(days=1))

    @property
    def key(self) -> str:
        """``2025-03`` for a month, ``2025-Q1`` for a quarter."""
        if self.kind is PeriodKind.month:
            return f"{self.first_day.year}-{self.first_day.month:02d}"
        return f"{self.first_day.year}-Q{(self.first_day.month - 1) // 3 + 1}"

    @property
    def label(self) -> str:
        """``March 2025``, or ``Jan–Mar 2025`` for a quarter."""
        if self.kind is PeriodKind.month:
            return f"{_MONTH_NAMES[self.first_day.month - 1]} {self.first_day.year}"
        return f"{_MONTHS[self.first_day.month - 1]}–{_MONTHS[self.last_day.month - 1]} {self.first_day.year}"

    @property
    def financial_quarter(self) -> str | None:
        """The quarter of the financial year (April to March), as Police and Crime Commissioners count them:
        ``2024/25 Q4`` for January to March 2025; None for a month."""
        if self.kind is not PeriodKind.quarter:
            return None
        year = self.first_day.year if self.first_day.month >= 4 else self.first_day.year - 1
        number = ((self.first_day.month - 4) % 12) // 3 + 1
        return f"{year}/{(year + 1) % 100:02d} Q{number}"

    def starts_at(self) -> datetime:
        return datetime.combine(self.first_day, time(), ZONE)

    def ends_at(self) -> datetime:
        """The first moment after the period (its end, exclusive)."""
        return datetime.combine(self.last_day + timedelta(days=1), time(), ZONE)


def _add_months(day: date, months: int) -> date:
    month = day.month - 1 + months
    return date(day.year + month // 12, month % 12 + 1, 1)


def today() -> date:
    return datetime.now(ZONE).date()


def periods_between(kind: PeriodKind, from_day: date | None, to_day: date | None) -> list[Period]:
    """The whole periods from the one holding ``from_day`` to the one holding ``to_day``. Without ``to_day``, up to
    today's; without ``from_day``, the four periods ending with ``to_day``'s."""
    for day in (from_day, to_day):
        if day is not None and not EARLIEST <= day <= LATEST:
            raise FiguresRangeError(f"dates must be between {EARLIEST} and {LATEST}")
    last = Period.containing(kind, to_day or today())
    if from_day is None:
        first = last.previous().previous().previous()
    else:
        first = Period.containing(kind, from_day)
    if first.first_day > last.first_day:
        raise FiguresRangeError("'from' is after 'to'")
    spans = [first]
    while spans[-1] != last:
        if len(spans) >= MAX_PERIODS:
            raise FiguresRangeError(f"at most {MAX_PERIODS} periods at a time")
        spans.append(spans[-1].next())
    return spans


# --- what is counted (rows read from the read model) -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReferredCase:
    case_id: str
    opened_at: datetime
    offence_type: str | None
    direct: bool  # a conference held
    indirect: bool  # an indirect item delivered


@dataclass(frozen=True, slots=True)
class AgreementItem:
    due_date: date
    completed: bool


@dataclass(frozen=True, slots=True)
class SurveyAnswer:
    responded_at: datetime
    satisfied: bool


@dataclass(frozen=True, slots=True)
class InformationClock:
    """One victim's Victims' Code clock for RJ information: ``state`` due (running), met or breached."""

    due_date: date
    state: str
    on_time: bool | None


@dataclass(frozen=True, slots=True)
class EndedCase:
    """A case that closed or was declined at screening: ``completed`` True (closed as completed), False (did not
    proceed to completion), with its offenders and what was recorded against them since."""

    ended_at: datetime
    completed: bool
    offenders: int
    reoffended: int
    later_offences: int


@dataclass(frozen=True, slots=True)
class Person:
    """A victim or offender of a referral, by their monitoring categories (None: not recorded)."""

    age_band: str | None
    gender: str | None
    ethnicity: str | None
    direct: bool
    indirect: bool


# --- what is shown ---------------------------------------------------------------------------------------------------


class _Shown(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Share(_Shown):
    """``count`` of ``of``; ``rate`` is their ratio (0 to 1), null when ``of`` is 0 or either count is withheld
    (null: only counts of people, such as victims' survey answers, are ever withheld)."""

    count: int | None
    of: int | None
    rate: float | None


def share(count: int | None, of: int | None) -> Share:
    return Share(count=count, of=of, rate=count / of if of and count is not None else None)


class VictimsCode(_Shown):
    """Victims whose RJ information fell due in the period: given on time, given late, flagged overdue and not given,
    or still running (pending). ``rate``: on time of those decided (due less pending), null when none is."""

    due: int
    on_time: int
    late: int
    overdue: int
    pending: int
    rate: float | None


class Cohort(_Shown):
    """Offenders of the cases of one kind that ended in the period; ``reoffended``: how many of them a later offence
    was recorded against (so far); ``frequency``: later offences per offender."""

    cases: int
    offenders: int | None = Field(description="Null: withheld, to avoid identifying anyone")
    reoffended: int | None = Field(description="Null: withheld, to avoid identifying anyone")
    later_offences: int | None = Field(description="Null: withheld with ``reoffended``, which it would give away")
    rate: float | None
    frequency: float | None


class Reoffending(_Shown):
    label: str = Field(default=SELF_SELECTED, description="What the comparison is, and what it is not")
    completed: Cohort = Field(description="Cases closed as completed")
    did_not_proceed: Cohort = Field(
        description="Cases declined at screening, or closed withdrawn, declined, not suitable, uncontactable or "
        "agreement not met"
    )


class PeriodFigures(_Shown):
    key: str = Field(description="2025-03 (a month), 2025-Q1 (a quarter), or 'total' (the whole range)")
    label: str
    first_day: date
    last_day: date
    financial_quarter: str | None = Field(description="The financial year's quarter (April to March), for a quarter")
    referrals: int
    direct_rj: Share = Field(description="Referrals that went on to a conference held")
    indirect_rj: Share = Field(description="Referrals that went on to an indirect item delivered")
    agreement_completion: Share = Field(description="Agreement items due in the period that are completed")
    victim_satisfaction: Share = Field(description="Victims' survey answers in the period that were satisfied")
    victims_code: VictimsCode
    reoffending: Reoffending


class OffenceTypeRow(_Shown):
    offence_type: str
    referrals: int
    direct_rj: Share
    indirect_rj: Share


class MonitoringRow(_Shown):
    """People of one category; a null count is fewer than 5 people, withheld."""

    category: str
    people: int | None
    direct_rj: int | None
    indirect_rj: int | None
    direct_rj_rate: float | None
    indirect_rj_rate: float | None


class MonitoringBreakdowns(_Shown):
    note: str
    threshold: int
    age_band: list[MonitoringRow]
    gender: list[MonitoringRow]
    ethnicity: list[MonitoringRow]


class NationalFigure(_Shown):
    measure: str
    value: float
    statement: str
    source: str
    quoted_by: str


class Figures(_Shown):
    """A force's figures over whole periods from ``first_day`` to ``last_day`` (UK local time)."""

    force: str
    period: PeriodKind
    first_day: date
    last_day: date
    time_zone: str
    periods: list[PeriodFigures]
    total: PeriodFigures
    by_offence_type: list[OffenceTypeRow] = Field(description="The whole range's referrals by offence type")
    by_monitoring: MonitoringBreakdowns = Field(description="The whole range's victims and offenders by category")
    national: list[NationalFigure]


SUPPRESSION_NOTE = (
    f"To avoid identifying anyone, a count of fewer than {SUPPRESS_BELOW} people is not shown, nor is the next "
    "smallest count beside it, so that it cannot be worked out from a total; categories with "
    f"fewer than {SUPPRESS_BELOW} people are pooled into one 'other' row."
)
WITHHELD = "[c]"
"""What a withheld count reads as in the CSV and on the page: the same for every withheld count, small or withheld
beside a small one, so that which is which is not given away (the Office for National Statistics' mark for
confidential)."""

NATIONAL: tuple[NationalFigure, ...] = (
    NationalFigure(
        measure="victim_satisfaction",
        value=0.85,
        statement="85% of victims who took part in a face-to-face conference were satisfied",
        source="Shapland et al. (2007), Restorative justice: the views of victims and offenders, Ministry of Justice "
        "Research Series 3/07",
        quoted_by="West Mercia Police's restorative justice service",
    ),
    NationalFigure(
        measure="reoffending_frequency_reduction",
        value=0.14,
        statement="a 14% reduction in the frequency of reoffending",
        source="Shapland et al. (2008), Does restorative justice affect reconviction? The fourth report from the "
        "evaluation of three schemes, Ministry of Justice Research Series 10/08",
        quoted_by="West Mercia Police's restorative justice service",
    ),
)


# --- the computation (pure) ---------------------------------------------------------------------------------------


class _Buckets:
    """Which period a moment or a day falls in (None: outside the range)."""

    def __init__(self, spans: Sequence[Period]) -> None:
        self.spans = spans
        self._starts = [p.starts_at() for p in spans]
        self._first_days = [p.first_day for p in spans]
        self._end = spans[-1].ends_at()
        self._last_day = spans[-1].last_day

    def at(self, moment: datetime) -> int | None:
        if moment < self._starts[0] or moment >= self._end:
            return None
        return bisect.bisect_right(self._starts, moment) - 1

    def on(self, day: date) -> int | None:
        if day < self._first_days[0] or day > self._last_day:
            return None
        return bisect.bisect_right(self._first_days, day) - 1


@dataclass
class _Tally:
    referrals: int = 0
    direct: int = 0
    indirect: int = 0
    items_due: int = 0
    items_completed: int = 0
    answers: int = 0
    satisfied: int = 0
    clocks: int = 0
    on_time: int = 0
    late: int = 0
    overdue: int = 0
    pending: int = 0
    ended: dict[bool, list[int]] = field(default_factory=lambda: {True: [0, 0, 0, 0], False: [0, 0, 0, 0]})
    """[cases, offenders, reoffended, later offences] of the cases closed as completed (True), and of the rest."""

    def add(self, other: _Tally) -> None:
        for name in vars(self):
            if name != "ended":
                setattr(self, name, getattr(self, name) + getattr(other, name))
        for group in (True, False):
            self.ended[group] = [a + b for a, b in zip(self.ended[group], other.ended[group], strict=True)]

    def shown(self, key: str, label: str, first_day: date, last_day: date, quarter: str | None) -> PeriodFigures:
        decided = self.clocks - self.pending
        return PeriodFigures(
            key=key, label=label, first_day=first_day, last_day=last_day, financial_quarter=quarter,
            referrals=self.referrals,
            direct_rj=share(self.direct, self.referrals),
            indirect_rj=share(self.indirect, self.referrals),
            agreement_completion=share(self.items_completed, self.items_due),
            victim_satisfaction=share(self.satisfied, self.answers),
            victims_code=VictimsCode(
                due=self.clocks, on_time=self.on_time, late=self.late, overdue=self.overdue, pending=self.pending,
                rate=self.on_time / decided if decided else None,
            ),
            reoffending=Reoffending(completed=_cohort(*self.ended[True]), did_not_proceed=_cohort(*self.ended[False])),
        )  # fmt: skip


def _cohort(cases: int, offenders: int | None, reoffended: int | None, later: int | None) -> Cohort:
    return Cohort(
        cases=cases, offenders=offenders, reoffended=reoffended, later_offences=later,
        rate=reoffended / offenders if offenders and reoffended is not None else None,
        frequency=later / offenders if offenders and later is not None else None,
    )  # fmt: skip


def tally(
    *,
    force: str,
    kind: PeriodKind,
    spans: Sequence[Period],
    referred: Iterable[ReferredCase],
    items: Iterable[AgreementItem],
    answers: Iterable[SurveyAnswer],
    clocks: Iterable[InformationClock],
    ended: Iterable[EndedCase],
    people: Iterable[Person],
) -> Figures:
    """The figures of ``spans`` from what the read model holds for them (anything outside the range is ignored)."""
    buckets = _Buckets(spans)
    tallies = [_Tally() for _ in spans]
    referred = list(referred)
    for case in referred:
        if (i := buckets.at(case.opened_at)) is not None:
            t = tallies[i]
            t.referrals += 1
            t.direct += case.direct
            t.indirect += case.indirect
    for item in items:
        if (i := buckets.on(item.due_date)) is not None:
            tallies[i].items_due += 1
            tallies[i].items_completed += item.completed
    for answer in answers:
        if (i := buckets.at(answer.responded_at)) is not None:
            tallies[i].answers += 1
            tallies[i].satisfied += answer.satisfied
    for clock in clocks:
        if (i := buckets.on(clock.due_date)) is not None:
            t = tallies[i]
            t.clocks += 1
            if clock.state == "met":
                t.on_time += clock.on_time is True
                t.late += clock.on_time is not True
            elif clock.state == "breached":
                t.overdue += 1
            else:
                t.pending += 1
    for case_ended in ended:
        if (i := buckets.at(case_ended.ended_at)) is not None:
            group = tallies[i].ended[case_ended.completed]
            for n, value in enumerate((1, case_ended.offenders, case_ended.reoffended, case_ended.later_offences)):
                group[n] += value
    total = _Tally()
    for t in tallies:
        total.add(t)
    in_range = [case for case in referred if buckets.at(case.opened_at) is not None]
    *periods, whole = withhold_people_counts(
        [
            *(t.shown(p.key, p.label, p.first_day, p.last_day, p.financial_quarter) for p, t in zip(spans, tallies,
                                                                                                   strict=True)),
            total.shown("total", "Whole range", spans[0].first_day, spans[-1].last_day, None),
        ]
    )  # fmt: skip
    return Figures(
        force=force,
        period=kind,
        first_day=spans[0].first_day,
        last_day=spans[-1].last_day,
        time_zone=ZONE.key,
        periods=periods,
        total=whole,
        by_offence_type=by_offence_type(in_range),
        by_monitoring=by_monitoring(people),
        national=list(NATIONAL),
    )


def withhold_people_counts(figures: Sequence[PeriodFigures]) -> list[PeriodFigures]:
    """The periods' figures then the whole range's (their sum), with the counts of people withheld: victims' survey
    answers and how many were satisfied, and each reoffending cohort's offenders and how many reoffended (with their
    later offences, which would say whether any did). Over the periods each is a line adding up to the whole range's
    figure (``withheld_cells``); the whole range's is withheld on its own terms. Rates go with their counts.
    Referrals, conversion, agreement items and Victims' Code clocks count cases, items and the service's own
    timeliness, not what a person said or did after RJ, and are shown as they are."""
    *periods, whole = figures

    def hidden(values: list[int], complements: list[int] | None = None) -> list[bool]:
        in_periods = withheld_cells(values[:-1], complements[:-1] if complements else None)
        return [*in_periods, *withheld_cells(values[-1:], complements[-1:] if complements else None)]

    answers = [f.victim_satisfaction.of or 0 for f in figures]
    satisfied = [f.victim_satisfaction.count or 0 for f in figures]
    answers_hidden = hidden(answers)
    satisfied_hidden = hidden(satisfied, [a - s for a, s in zip(answers, satisfied, strict=True)])
    cohorts: dict[str, list[Cohort]] = {}
    for group in ("completed", "did_not_proceed"):
        ended = [getattr(f.reoffending, group) for f in figures]
        offenders = [c.offenders or 0 for c in ended]
        reoffended = [c.reoffended or 0 for c in ended]
        offenders_hidden = hidden(offenders)
        reoffended_hidden = hidden(reoffended, [o - r for o, r in zip(offenders, reoffended, strict=True)])
        cohorts[group] = [
            _cohort(c.cases, None if no_offenders else c.offenders, None if no_reoffended else c.reoffended,
                    None if no_reoffended else c.later_offences)
            for c, no_offenders, no_reoffended in zip(ended, offenders_hidden, reoffended_hidden, strict=True)
        ]  # fmt: skip
    out = []
    for n, f in enumerate(figures):
        survey = share(None if satisfied_hidden[n] else satisfied[n], None if answers_hidden[n] else answers[n])
        reoffending = f.reoffending.model_copy(
            update={"completed": cohorts["completed"][n], "did_not_proceed": cohorts["did_not_proceed"][n]}
        )
        out.append(f.model_copy(update={"victim_satisfaction": survey, "reoffending": reoffending}))
    return out


def by_offence_type(referred: Iterable[ReferredCase]) -> list[OffenceTypeRow]:
    """Referrals and conversion by offence type, the most referred first. Not suppressed: an offence type is about
    the crime, not about who took part, and the force's staff may see every one of its cases."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for case in referred:
        row = counts[case.offence_type or NOT_RECORDED]
        row[0] += 1
        row[1] += case.direct
        row[2] += case.indirect
    return [
        OffenceTypeRow(offence_type=name, referrals=n, direct_rj=share(d, n), indirect_rj=share(i, n))
        for name, (n, d, i) in sorted(counts.items(), key=lambda kv: (-kv[1][0], kv[0]))
    ]


def monitoring_rows(people: Iterable[tuple[str | None, bool, bool]], order: Sequence[str] = ()) -> list[MonitoringRow]:
    """People by one category (value, direct RJ, indirect RJ): categories of at least ``SUPPRESS_BELOW`` people each
    in a row (in ``order`` where given, else the largest first), the rest pooled into ``OTHER``; every count under
    ``SUPPRESS_BELOW`` withheld, and a rate only where both its counts are shown."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for value, direct, indirect in people:
        row = counts[value or NOT_RECORDED]
        row[0] += 1
        row[1] += direct
        row[2] += indirect
    shown = {name: row for name, row in counts.items() if row[0] >= SUPPRESS_BELOW}
    pooled = [sum(row[n] for name, row in counts.items() if name not in shown) for n in range(3)]

    def place(item: tuple[str, list[int]]) -> tuple[int, int, str]:
        name, row = item
        return (order.index(name), 0, "") if name in order else (len(order), -row[0], name)

    lines = sorted(shown.items(), key=place)
    if pooled[0]:
        lines.append((OTHER, pooled))
    # Each column adds up to the same total in every breakdown (everyone, everyone in direct RJ, ...), which any
    # breakdown showing the whole column gives away: so each column is withheld as a line that adds up.
    columns = [_shown_cells([row[n] for _, row in lines]) for n in range(3)]
    return [
        _monitoring_row(name, people, direct, indirect)
        for (name, _), people, direct, indirect in zip(lines, *columns, strict=True)
    ]


def _monitoring_row(category: str, people: int | None, direct: int | None, indirect: int | None) -> MonitoringRow:
    return MonitoringRow(
        category=category, people=people, direct_rj=direct, indirect_rj=indirect,
        direct_rj_rate=direct / people if people and direct is not None else None,
        indirect_rj_rate=indirect / people if people and indirect is not None else None,
    )  # fmt: skip


def withheld_cells(values: Sequence[int], complements: Sequence[int] | None = None) -> list[bool]:
    """Which cells of a line that adds up to a known total to withhold. A cell under ``SUPPRESS_BELOW`` (or whose
    complement is, where it has one: the 1 unsatisfied victim of 7 answers with 6 satisfied) is withheld; then, if
    any is, the smallest cells shown after it, until the withheld cells are at least two and hold at least
    ``SUPPRESS_BELOW`` between them (and of their complements), so that subtracting the cells shown from the total
    gives only a sum of several cells, never one cell, nor a sum small enough to tell them all (a sum of 0 would
    say every one of them is 0). If that takes every cell, every cell is withheld: the total is then itself under
    ``SUPPRESS_BELOW``, or the cells cannot be told apart from it."""

    def small(i: int) -> bool:
        return values[i] < SUPPRESS_BELOW or (complements is not None and complements[i] < SUPPRESS_BELOW)

    withheld = {i for i in range(len(values)) if small(i)}

    def enough() -> bool:
        if len(withheld) < 2 or sum(values[i] for i in withheld) < SUPPRESS_BELOW:
            return False
        return complements is None or sum(complements[i] for i in withheld) >= SUPPRESS_BELOW

    if withheld:
        for i in sorted(set(range(len(values))) - withheld, key=lambda i: (values[i], i)):
            if enough():
                break
            withheld.add(i)
    return [i in withheld for i in range(len(values))]


def _shown_cells(values: Sequence[int], complements: Sequence[int] | None = None) -> list[int | None]:
    """``values`` with the cells ``withheld_cells`` withholds as None."""
    return [None if hidden else v for v, hidden in zip(values, withheld_cells(values, complements), strict=True)]


def by_monitoring(people: Iterable[Person]) -> MonitoringBreakdowns:
    everyone = list(people)
    return MonitoringBreakdowns(
        note=SUPPRESSION_NOTE,
        threshold=SUPPRESS_BELOW,
        age_band=monitoring_rows(((p.age_band, p.direct, p.indirect) for p in everyone), _AGE_ORDER),
        gender=monitoring_rows((p.gender, p.direct, p.indirect) for p in everyone),
        ethnicity=monitoring_rows((p.ethnicity, p.direct, p.indirect) for p in everyone),
    )


# --- reading the read model -------------------------------------------------------------------------------------


async def compute(
    conn: asyncpg.Connection, *, force: str, kind: PeriodKind, from_day: date | None, to_day: date | None
) -> Figures:
    """``force``'s figures for the periods from ``from_day`` to ``to_day`` (``FiguresRangeError`` for a range that
    cannot be answered). Run it in one read-only, repeatable-read transaction, so every figure is of one moment."""
    spans = periods_between(kind, from_day, to_day)
    starts, ends = spans[0].starts_at(), spans[-1].ends_at()
    first_day, last_day = spans[0].first_day, spans[-1].last_day
    referred = await _referred(conn, force, starts, ends)
    return tally(
        force=force,
        kind=kind,
        spans=spans,
        referred=referred,
        items=await _agreement_items(conn, force, first_day, last_day),
        answers=await _victim_answers(conn, force, starts, ends),
        clocks=await _information_clocks(conn, force, first_day, last_day),
        ended=await _ended(conn, force, starts, ends),
        people=await _people(conn, force, starts, ends, {c.case_id: c for c in referred}),
    )


async def _referred(conn: asyncpg.Connection, force: str, starts: datetime, ends: datetime) -> list[ReferredCase]:
    rows = await conn.fetch(
        """SELECT c.case_id, c.opened_at, c.offence_category,
                  EXISTS (SELECT 1 FROM api.meetings m
                           WHERE m.case_id = c.case_id AND m.kind = 'conference' AND m.held_at IS NOT NULL) AS direct,
                  EXISTS (SELECT 1 FROM api.indirect_items i
                           WHERE i.case_id = c.case_id AND i.state = 'delivered') AS indirect
             FROM api.cases c
            WHERE c.force = $1 AND c.opened_at >= $2 AND c.opened_at < $3""",
        force,
        starts,
        ends,
    )
    return [ReferredCase(r["case_id"], r["opened_at"], r["offence_category"], r["direct"], r["indirect"]) for r in rows]


async def _agreement_items(conn: asyncpg.Connection, force: str, first: date, last: date) -> list[AgreementItem]:
    rows = await conn.fetch(
        """SELECT i.due_date, i.state = 'completed' AS completed
             FROM api.agreement_items i JOIN api.cases c ON c.case_id = i.case_id
            WHERE c.force = $1 AND i.due_date BETWEEN $2 AND $3""",
        force,
        first,
        last,
    )
    return [AgreementItem(r["due_date"], r["completed"]) for r in rows]


async def _victim_answers(conn: asyncpg.Connection, force: str, starts: datetime, ends: datetime) -> list[SurveyAnswer]:
    rows = await conn.fetch(
        """SELECT s.responded_at, s.satisfied
             FROM api.survey_responses s JOIN api.cases c ON c.case_id = s.case_id
            WHERE c.force = $1 AND s.role = 'victim' AND s.responded_at >= $2 AND s.responded_at < $3""",
        force,
        starts,
        ends,
    )
    return [SurveyAnswer(r["responded_at"], r["satisfied"]) for r in rows]


async def _information_clocks(conn: asyncpg.Connection, force: str, first: date, last: date) -> list[InformationClock]:
    rows = await conn.fetch(
        """SELECT d.due_date, d.state, d.on_time
             FROM (SELECT case_id, state, on_time,
                          COALESCE(due_date, (due_by AT TIME ZONE 'Europe/London')::date) AS due_date
                     FROM api.deadlines WHERE kind = 'victim_information') d
             JOIN api.cases c ON c.case_id = d.case_id
            WHERE c.force = $1 AND d.due_date BETWEEN $2 AND $3""",
        force,
        first,
        last,
    )
    return [InformationClock(r["due_date"], r["state"], r["on_time"]) for r in rows]


async def _ended(conn: asyncpg.Connection, force: str, starts: datetime, ends: datetime) -> list[EndedCase]:
    rows = await conn.fetch(
        """SELECT e.ended_at, e.closure_reason = 'completed' AS completed,
                  (SELECT count(*) FROM api.participants p WHERE p.case_id = e.case_id AND p.role = 'offender')
                      AS offenders,
                  (SELECT count(DISTINCT r.person_id) FROM api.reoffences r WHERE r.case_id = e.case_id) AS reoffended,
                  (SELECT count(*) FROM api.reoffences r WHERE r.case_id = e.case_id) AS later_offences
             FROM (SELECT case_id, closure_reason, COALESCE(closed_at, declined_at) AS ended_at
                     FROM api.cases WHERE force = $1) e
            WHERE e.ended_at >= $2 AND e.ended_at < $3""",
        force,
        starts,
        ends,
    )
    return [
        EndedCase(r["ended_at"], bool(r["completed"]), r["offenders"], r["reoffended"], r["later_offences"])
        for r in rows
    ]


async def _people(
    conn: asyncpg.Connection, force: str, starts: datetime, ends: datetime, cases: dict[str, ReferredCase]
) -> list[Person]:
    """Victims and offenders of the range's referrals by their monitoring categories, opened here and kept only as
    long as it takes to count them. A correction (``rectified``) wins over what upstream said; a value that cannot be
    opened (erased with the case's retention, or not authentic) counts as not recorded."""
    rows = await conn.fetch(
        """SELECT p.case_id, p.person_id, p.details, p.rectified
             FROM api.participants p JOIN api.cases c ON c.case_id = p.case_id
            WHERE c.force = $1 AND c.opened_at >= $2 AND c.opened_at < $3 AND p.role IN ('victim', 'offender')""",
        force,
        starts,
        ends,
    )
    documents: list[dict[str, Any]] = []
    for row in rows:
        details = _loads(row["details"])
        corrected = _loads(row["rectified"])
        values = {name: corrected.get(name, details.get(name)) for name in MONITORING}
        documents.append({"person_id": row["person_id"], **values})
    opened = await _open(conn, documents, [r["case_id"] for r in rows])
    people = []
    for row, values in zip(rows, opened, strict=True):
        case = cases.get(row["case_id"])
        if case is None:
            continue
        people.append(
            Person(
                age_band=_category(values.get("age_band")),
                gender=_category(values.get("gender")),
                ethnicity=_category(values.get("ethnicity")),
                direct=case.direct,
                indirect=case.indirect,
            )
        )
    return people


async def _open(conn: asyncpg.Connection, documents: list[dict[str, Any]], case_ids: list[str]) -> list[dict[str, Any]]:
    batch = privacy.batch()
    try:
        return [_readable(o) for o in await batch.open_documents(conn, Participant, documents, case_ids)]
    except ValueError:  # one cannot be authentic: open each alone, and count that one as not recorded
        pass
    out = []
    for document, case_id in zip(documents, case_ids, strict=True):
        try:
            [o] = await batch.open_documents(conn, Participant, [document], [case_id])
            out.append(_readable(o))
        except ValueError:
            out.append({})
    return out


def _readable(opened: Any) -> dict[str, Any]:
    data: dict[str, Any] = dict(opened.data)
    for path in opened.erased:
        data.pop(path.removeprefix("$").lstrip("."), None)
    return data


def _category(value: Any) -> str | None:
    if isinstance(value, str) and value.strip() and not is_token(value):
        return value.strip()
    return None


def _loads(value: str | None) -> dict[str, Any]:
    document = json.loads(value) if value is not None else None
    return document if isinstance(document, dict) else {}


# --- the Police and Crime Commissioner's return ------------------------------------------------------------------


CSV_COLUMNS = ("period", "first_day", "last_day", "financial_quarter", "measure", "category", "value")


def percent(rate: float | None) -> str:
    """A rate as a percentage to one decimal place (``25.0``); empty when there is nothing to divide by."""
    return "" if rate is None else f"{rate * 100:.1f}"


def count_cell(count: int | None) -> str:
    """A count, or ``WITHHELD`` when it is withheld."""
    return WITHHELD if count is None else str(count)


def period_measures(p: PeriodFigures) -> list[tuple[str, str]]:
    """One period's figures as (measure, value) pairs, in the return's order."""
    vc, reoffending = p.victims_code, p.reoffending
    out = [
        ("referrals", str(p.referrals)),
        ("direct_rj", str(p.direct_rj.count)),
        ("direct_rj_rate_percent", percent(p.direct_rj.rate)),
        ("indirect_rj", str(p.indirect_rj.count)),
        ("indirect_rj_rate_percent", percent(p.indirect_rj.rate)),
        ("agreement_items_due", str(p.agreement_completion.of)),
        ("agreement_items_completed", str(p.agreement_completion.count)),
        ("agreement_completion_rate_percent", percent(p.agreement_completion.rate)),
        ("victim_survey_responses", count_cell(p.victim_satisfaction.of)),
        ("victims_satisfied", count_cell(p.victim_satisfaction.count)),
        ("victim_satisfaction_rate_percent", percent(p.victim_satisfaction.rate)),
        ("victims_code_information_due", str(vc.due)),
        ("victims_code_information_on_time", str(vc.on_time)),
        ("victims_code_information_late", str(vc.late)),
        ("victims_code_information_overdue", str(vc.overdue)),
        ("victims_code_information_pending", str(vc.pending)),
        ("victims_code_compliance_rate_percent", percent(vc.rate)),
    ]
    for name, cohort in (("completed", reoffending.completed), ("did_not_proceed", reoffending.did_not_proceed)):
        out += [
            (f"reoffending_{name}_cases", str(cohort.cases)),
            (f"reoffending_{name}_offenders", count_cell(cohort.offenders)),
            (f"reoffending_{name}_reoffended", count_cell(cohort.reoffended)),
            (f"reoffending_{name}_later_offences", count_cell(cohort.later_offences)),
            (f"reoffending_{name}_rate_percent", percent(cohort.rate)),
            (f"reoffending_{name}_frequency", "" if cohort.frequency is None else f"{cohort.frequency:.2f}"),
        ]
    return out


def to_csv(figures: Figures) -> str:
    """The figures as the Police and Crime Commissioner's quarterly return: one row per measure per period (then the
    whole range), the breakdowns of the whole range, and the national figures quoted beside them, with sources.
    Long rather than wide, so that every row says what it is and a spreadsheet pivots it as the office likes."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for p in [*figures.periods, figures.total]:
        quarter = p.financial_quarter or ""
        for measure, value in period_measures(p):
            writer.writerow((p.key, p.first_day, p.last_day, quarter, measure, "", value))
    whole = ("total", figures.first_day, figures.last_day, "")
    for row in figures.by_offence_type:
        writer.writerow((*whole, "referrals_by_offence_type", row.offence_type, row.referrals))
        writer.writerow((*whole, "direct_rj_by_offence_type", row.offence_type, row.direct_rj.count))
        writer.writerow((*whole, "indirect_rj_by_offence_type", row.offence_type, row.indirect_rj.count))
    for name in MONITORING:
        for m in getattr(figures.by_monitoring, name):
            writer.writerow((*whole, f"people_by_{name}", m.category, count_cell(m.people)))
            writer.writerow((*whole, f"direct_rj_people_by_{name}", m.category, count_cell(m.direct_rj)))
            writer.writerow((*whole, f"indirect_rj_people_by_{name}", m.category, count_cell(m.indirect_rj)))
    for national in figures.national:
        writer.writerow((*whole, f"national_{national.measure}_percent", national.source, percent(national.value)))
    return out.getvalue()
