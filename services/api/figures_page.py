"""The console's figures page: each figure as an inline SVG bar chart (no JavaScript, no images to fetch) with a data
table beside it, which holds the same numbers and is what a screen reader or a keyboard user reads; the chart itself
is one image with a title and a text description (``role="img"``), not a maze of shapes.

Pure: ``render`` turns ``services.api.figures.Figures`` into HTML with the template
``templates/console/figures.html``; the bars' geometry is worked out here, so the template only places it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from services.api.figures import (
    MONITORING,
    NATIONAL,
    SELF_SELECTED,
    Cohort,
    Figures,
    MonitoringRow,
    PeriodFigures,
    Share,
    count_cell,
)

NO_RATE = "n/a"
"""A rate with nothing to divide by (no referrals, no answers, ...)."""

# The SVG's own coordinate system (it scales to the page's width): labels on the left, bars to the right of them.
# Narrow enough that its text stays readable on a phone (it scales down with the page), wide enough for a month's name.
WIDTH = 480
LABEL_RIGHT = 105
BAR_LEFT = 112
BAR_SPAN = 300
ROW = 30
BAR = 18
TOP = 28
BOTTOM = 10


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    text: str
    y: int
    width: float


@dataclass(frozen=True, slots=True)
class Reference:
    """A national figure drawn across the bars as a dashed line."""

    x: float
    text: str


@dataclass(frozen=True, slots=True)
class Table:
    caption: str
    headers: Sequence[str]
    rows: Sequence[Sequence[str]]


@dataclass(frozen=True, slots=True)
class Chart:
    id: str
    title: str
    description: str
    bars: Sequence[Bar]
    height: int
    reference: Reference | None
    table: Table
    note: str | None = None


def rate_text(rate: float | None) -> str:
    return NO_RATE if rate is None else f"{rate * 100:.1f}%"


def bars(values: Sequence[tuple[str, float | None, str]], *, scale_max: float) -> list[Bar]:
    """Horizontal bars for (label, value, text); a missing value is an empty bar with its text ("n/a")."""
    top = max(scale_max, 1e-9)
    return [
        Bar(label=label, text=text, y=TOP + i * ROW, width=round(BAR_SPAN * (value or 0) / top, 1))
        for i, (label, value, text) in enumerate(values)
    ]


def chart(
    id: str,
    title: str,
    description: str,
    values: Sequence[tuple[str, float | None, str]],
    table: Table,
    *,
    percent: bool,
    reference: tuple[float, str] | None = None,
    note: str | None = None,
) -> Chart:
    scale_max = 1.0 if percent else max((v or 0 for _, v, _ in values), default=0) or 1
    drawn = bars(values, scale_max=scale_max)
    line = None
    if reference is not None:
        line = Reference(x=round(BAR_LEFT + BAR_SPAN * reference[0] / scale_max, 1), text=reference[1])
    return Chart(id, title, description, drawn, TOP + ROW * len(values) + BOTTOM, line, table, note)


def _summary(values: Sequence[tuple[str, float | None, str]]) -> str:
    return "; ".join(f"{label}: {text}" for label, _, text in values) or "no periods"


def _share_rows(figures: Figures, pick: Callable[[PeriodFigures], Share]) -> list[list[str]]:
    return [
        [p.label, count_cell(pick(p).count), count_cell(pick(p).of), rate_text(pick(p).rate)]
        for p in [*figures.periods, figures.total]
    ]


def _share_chart(
    figures: Figures,
    id: str,
    title: str,
    pick: Callable[[PeriodFigures], Share],
    headers: tuple[str, str],
    *,
    reference: tuple[float, str] | None = None,
    note: str | None = None,
) -> Chart:
    values = [(p.label, pick(p).rate, rate_text(pick(p).rate)) for p in figures.periods]
    table = Table(title, ["Period", *headers, "Rate"], _share_rows(figures, pick))
    description = f"{title} by period, as a percentage: {_summary(values)}."
    return chart(id, title, description, values, table, percent=True, reference=reference, note=note)


def _cohort_cells(name: str, cohort: Cohort) -> list[str]:
    frequency = NO_RATE if cohort.frequency is None else f"{cohort.frequency:.2f}"
    return [
        name, str(cohort.cases), count_cell(cohort.offenders), count_cell(cohort.reoffended),
        count_cell(cohort.later_offences),
        rate_text(cohort.rate), frequency,
    ]  # fmt: skip


COHORT_HEADERS = (
    "Cases ended", "Offenders", "Reoffended", "Later offences", "Reoffending rate", "Later offences per offender",
)  # fmt: skip
GROUPS = ("Completed RJ", "Did not proceed")


def charts(figures: Figures) -> list[Chart]:
    """Every chart of the page, in order, each with its table."""
    periods = figures.periods
    referrals = [(p.label, float(p.referrals), str(p.referrals)) for p in periods]
    satisfaction, reoffending = NATIONAL[0], NATIONAL[1]
    total = figures.total.reoffending
    cohorts = [(GROUPS[0], total.completed), (GROUPS[1], total.did_not_proceed)]
    reoffended = [(name, c.rate, rate_text(c.rate)) for name, c in cohorts]
    vc_rows = [
        [p.label, str(p.victims_code.on_time), str(p.victims_code.late), str(p.victims_code.overdue),
         str(p.victims_code.pending), str(p.victims_code.due), rate_text(p.victims_code.rate)]
        for p in [*periods, figures.total]
    ]  # fmt: skip
    vc_values = [(p.label, p.victims_code.rate, rate_text(p.victims_code.rate)) for p in periods]
    return [
        chart(
            "referrals", "Referrals", f"Cases referred, by period: {_summary(referrals)}.", referrals,
            Table("Referrals", ["Period", "Referrals"],
                  [[p.label, str(p.referrals)] for p in [*periods, figures.total]]),
            percent=False,
        ),
        _share_chart(figures, "direct-rj", "Conversion to direct RJ (a conference held)", lambda p: p.direct_rj,
                     ("Conferences held", "Referrals")),
        _share_chart(figures, "indirect-rj", "Conversion to indirect RJ (an indirect item delivered)",
                     lambda p: p.indirect_rj, ("Indirect RJ", "Referrals")),
        _share_chart(figures, "agreement-completion", "Agreement completion", lambda p: p.agreement_completion,
                     ("Items completed", "Items due")),
        _share_chart(
            figures, "victim-satisfaction", "Victim satisfaction", lambda p: p.victim_satisfaction,
            ("Satisfied", "Responses"), reference=(satisfaction.value, f"National {satisfaction.value * 100:.0f}%"),
            note=f"The dashed line is the national figure: {satisfaction.statement} ({satisfaction.source}).",
        ),
        chart(
            "victims-code", "Victims' Code compliance (RJ information given on time)",
            f"RJ information given on time, of victims whose clock ended, by period: {_summary(vc_values)}.",
            vc_values,
            Table("Victims' Code compliance", ["Period", "On time", "Late", "Overdue", "Pending", "Due", "Rate"],
                  vc_rows),
            percent=True,
            note="Pending: the clock is still running (neither given nor overdue yet); not counted in the rate.",
        ),
        chart(
            "reoffending", f"Reoffending: completed RJ beside cases that did not proceed ({SELF_SELECTED})",
            f"Share of offenders a later offence was recorded against, whole range: {_summary(reoffended)}.",
            reoffended,
            Table(f"Reoffending, whole range ({SELF_SELECTED})", ["Group", *COHORT_HEADERS],
                  [_cohort_cells(name, c) for name, c in cohorts]),
            percent=True,
            note=f"Nationally: {reoffending.statement} ({reoffending.source}), measured against a comparison group. "
            "The groups here chose themselves (who takes part in RJ is not random), so the difference is not the "
            "effect of RJ.",
        ),
    ]  # fmt: skip


def reoffending_by_period(figures: Figures) -> Table:
    rows = []
    for p in [*figures.periods, figures.total]:
        rows.append([p.label, *_cohort_cells(GROUPS[0], p.reoffending.completed)])
        rows.append([p.label, *_cohort_cells(GROUPS[1], p.reoffending.did_not_proceed)])
    return Table(f"Reoffending by the period cases ended ({SELF_SELECTED})", ["Period", "Group", *COHORT_HEADERS], rows)


def offence_table(figures: Figures) -> Table:
    return Table(
        "Referrals by offence type, whole range",
        ["Offence type", "Referrals", "Direct RJ", "Direct rate", "Indirect RJ", "Indirect rate"],
        [
            [r.offence_type, str(r.referrals), str(r.direct_rj.count), rate_text(r.direct_rj.rate),
             str(r.indirect_rj.count), rate_text(r.indirect_rj.rate)]
            for r in figures.by_offence_type
        ],
    )  # fmt: skip


MONITORING_TITLES = {"age_band": "Age band", "gender": "Gender", "ethnicity": "Ethnicity"}


def monitoring_tables(figures: Figures) -> list[tuple[str, Table]]:
    def cells(r: MonitoringRow) -> list[str]:
        return [r.category, count_cell(r.people), count_cell(r.direct_rj), rate_text(r.direct_rj_rate),
                count_cell(r.indirect_rj), rate_text(r.indirect_rj_rate)]  # fmt: skip

    out = []
    for name in MONITORING:
        title = MONITORING_TITLES[name]
        rows: list[MonitoringRow] = getattr(figures.by_monitoring, name)
        out.append((
            name,
            Table(f"Victims and offenders by {title.lower()}, whole range",
                  [title, "People", "Direct RJ", "Direct rate", "Indirect RJ", "Indirect rate"],
                  [cells(r) for r in rows]),
        ))  # fmt: skip
    return out


_TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(figures: Figures, *, nonce: str, csv_url: str, form_action: str) -> str:
    """The page: the form to choose periods, the charts with their tables, the breakdowns, the national figures."""
    return _TEMPLATES.get_template("console/figures.html").render(
        figures=figures,
        charts=charts(figures),
        reoffending_by_period=reoffending_by_period(figures),
        offence_table=offence_table(figures),
        monitoring_tables=monitoring_tables(figures),
        national=figures.national,
        self_selected=SELF_SELECTED,
        nonce=nonce,
        csv_url=csv_url,
        form_action=form_action,
        geometry={"width": WIDTH, "label_right": LABEL_RIGHT, "bar_left": BAR_LEFT, "bar_span": BAR_SPAN,
                  "bar": BAR, "row": ROW, "top": TOP},
    )  # fmt: skip
