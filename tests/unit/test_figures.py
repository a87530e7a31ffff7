"""The figures' pure parts (services/api/figures.py, figures_page.py): periods in UK time, small-cell suppression, and
the charts' geometry. The figures themselves, from a read model, are tests/integration/test_figures.py's."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.api.figures import (
    NOT_RECORDED,
    OTHER,
    SUPPRESS_BELOW,
    EndedCase,
    FiguresRangeError,
    Period,
    PeriodKind,
    SurveyAnswer,
    monitoring_rows,
    periods_between,
    tally,
    withheld_cells,
)
from services.api.figures_page import BAR_LEFT, BAR_SPAN, Table, bars, chart


def test_a_quarter_runs_from_uk_midnight_to_uk_midnight_across_the_change_to_summer_time() -> None:
    q1 = Period.containing(PeriodKind.quarter, date(2025, 2, 14))
    assert (q1.first_day, q1.last_day, q1.key, q1.label) == (date(2025, 1, 1), date(2025, 3, 31), "2025-Q1",
                                                              "Jan–Mar 2025")  # fmt: skip
    assert q1.starts_at() == datetime(2025, 1, 1, tzinfo=UTC)  # GMT
    assert q1.ends_at() == datetime(2025, 3, 31, 23, tzinfo=UTC)  # midnight BST
    assert q1.next().starts_at() == q1.ends_at()


def test_months_and_quarters_follow_each_other_over_a_year_end() -> None:
    december = Period.containing(PeriodKind.month, date(2024, 12, 31))
    assert (december.key, december.label, december.next().key) == ("2024-12", "December 2024", "2025-01")
    assert Period.containing(PeriodKind.quarter, date(2024, 11, 5)).next().key == "2025-Q1"
    assert Period.containing(PeriodKind.quarter, date(2025, 1, 5)).previous().key == "2024-Q4"


@pytest.mark.parametrize(
    ("day", "financial"),
    [(date(2025, 2, 1), "2024/25 Q4"), (date(2025, 4, 1), "2025/26 Q1"), (date(2025, 12, 31), "2025/26 Q3")],
)
def test_quarters_also_say_their_financial_quarter_counted_from_april(day: date, financial: str) -> None:
    assert Period.containing(PeriodKind.quarter, day).financial_quarter == financial
    assert Period.containing(PeriodKind.month, day).financial_quarter is None


def test_a_range_is_the_whole_periods_holding_its_days_and_by_default_the_last_four() -> None:
    months = periods_between(PeriodKind.month, date(2025, 1, 31), date(2025, 3, 1))
    assert [p.key for p in months] == ["2025-01", "2025-02", "2025-03"]
    assert [p.key for p in periods_between(PeriodKind.quarter, None, date(2025, 5, 1))] == [
        "2024-Q3", "2024-Q4", "2025-Q1", "2025-Q2",
    ]  # fmt: skip
    assert len(periods_between(PeriodKind.month, date(2015, 1, 1), date(2024, 12, 31))) == 120
    with pytest.raises(FiguresRangeError, match="at most 120"):
        periods_between(PeriodKind.month, date(2015, 1, 1), date(2025, 1, 1))
    with pytest.raises(FiguresRangeError, match="after"):
        periods_between(PeriodKind.quarter, date(2025, 7, 1), date(2025, 6, 30))


def test_small_categories_are_pooled_and_every_count_under_five_withheld_with_the_next_smallest() -> None:
    people = [("b", True, False)] * 7 + [("a", True, True)] * 5 + [("rare", True, True)] * 2 + [(None, False, True)] * 2
    rows = monitoring_rows(people)
    # By hand: b (7 people, 7 direct, 0 indirect), a (5, 5, 5), and "rare" (2) with not recorded (2) pooled into
    # OTHER (4, 2, 4). People: OTHER's 4 is small, so a's 5 goes too (one withheld cell would be the total less the
    # rest). Direct: OTHER's 2, and a's 5 beside it. Indirect: b's 0 and OTHER's 4 are small and hold only 4 between
    # them (everyone would know they are all but a's), so a's 5 goes too.
    assert [(r.category, r.people, r.direct_rj, r.indirect_rj) for r in rows] == [
        ("b", 7, 7, None),
        ("a", None, None, None),
        (OTHER, None, None, None),  # pooled names are shown nowhere
    ]
    assert (rows[0].direct_rj_rate, rows[0].indirect_rj_rate, rows[1].direct_rj_rate) == (1.0, None, None)
    assert monitoring_rows([]) == []


def recoverable(values: list[int], hidden: list[bool]) -> list[int]:
    """The withheld cells someone could work out by subtracting the cells shown from the line's total: the only one
    withheld, or every one of them when what is left is 0."""
    withheld = [i for i, h in enumerate(hidden) if h]
    left = sum(values) - sum(v for v, h in zip(values, hidden, strict=True) if not h)
    return withheld if len(withheld) == 1 or (withheld and left == 0) else []


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d", None]), st.booleans(), st.booleans()), max_size=60))
def test_no_withheld_monitoring_count_can_be_worked_out_from_the_column_total(
    people: list[tuple[str | None, bool, bool]],
) -> None:
    """Every breakdown's column adds up to the same total (everyone, everyone in direct RJ, ...), which a breakdown
    showing the whole column gives away, so take it as known whenever it is 5 or more; under 5, every cell of every
    breakdown is under 5 and withheld, so no breakdown gives it away."""
    rows = monitoring_rows(people)
    # The true counts, by category (the pooled row is everything not named in a row of its own).
    named = {r.category for r in rows} - {OTHER}
    for n, name in ((0, "people"), (1, "direct_rj"), (2, "indirect_rj")):

        def counted(category: str, value: str | None) -> bool:
            value = value or NOT_RECORDED
            return value == category or (category == OTHER and value not in named)

        true = [sum((1 if n == 0 else int(bool(p[n]))) for p in people if counted(r.category, p[0])) for r in rows]
        shown = [getattr(r, name) for r in rows]
        hidden = [value is None for value in shown]
        assert all(v == t for v, t in zip(shown, true, strict=True) if v is not None), name
        assert all(t >= SUPPRESS_BELOW for t, h in zip(true, hidden, strict=True) if not h), name
        if sum(true) < SUPPRESS_BELOW:
            assert all(hidden), name
        else:
            assert recoverable(true, hidden) == [], (name, true, hidden)
        if any(hidden):
            assert sum(t for t, h in zip(true, hidden, strict=True) if h) >= SUPPRESS_BELOW or all(hidden)


def test_a_line_withholds_the_next_smallest_cells_until_two_hold_five_and_so_do_their_complements() -> None:
    assert withheld_cells([9, 6, 5, 7]) == [False] * 4
    assert withheld_cells([9, 3, 6, 7]) == [False, True, True, False]
    assert withheld_cells([9, 0, 0, 7, 5]) == [False, True, True, False, True]  # 0 + 0 would tell both
    assert withheld_cells([2, 1]) == [True, True]
    # 6 of 7 satisfied says one was not: withheld, and the 8 of 12 beside it (whose 4 unsatisfied make 5 with it).
    assert withheld_cells([6, 8, 20], [1, 4, 30]) == [True, True, False]
    assert withheld_cells([6, 9, 20], [1, 0, 30]) == [True, True, True]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 12), st.integers(0, 12)), min_size=1, max_size=6),
    st.lists(st.tuples(st.integers(0, 8), st.integers(0, 8), st.integers(0, 3)), min_size=1, max_size=6),
)
def test_no_withheld_survey_or_reoffending_count_of_a_period_can_be_worked_out_from_the_whole_range(
    answers: list[tuple[int, int]], cohorts: list[tuple[int, int, int]]
) -> None:
    """Victims' answers (satisfied, not satisfied) and offenders (reoffended, not) per month: whatever the counts,
    every count of people shown is at least 5, and so is what it leaves of its whole (answers not satisfied,
    offenders who did not reoffend); and subtracting the months shown from the whole range tells no withheld one."""
    spans = periods_between(PeriodKind.month, date(2025, 1, 1), date(2025, 1, 1) + timedelta(days=31 * (max(
        len(answers), len(cohorts)) - 1)))  # fmt: skip
    survey = [
        SurveyAnswer(datetime.combine(spans[n].first_day, datetime.min.time(), UTC) + timedelta(hours=12), n_ok < yes)
        for n, (yes, no) in enumerate(answers) for n_ok in range(yes + no)
    ]  # fmt: skip
    ended = [
        EndedCase(datetime.combine(spans[n].first_day, datetime.min.time(), UTC) + timedelta(hours=12), True,
                  offenders=again + clean, reoffended=again, later_offences=again * times)
        for n, (again, clean, times) in enumerate(cohorts) if again + clean
    ]  # fmt: skip
    figures = tally(force="f", kind=PeriodKind.month, spans=spans, referred=[], items=[], answers=survey, clocks=[],
                    ended=ended, people=[])  # fmt: skip
    true_yes = [yes for yes, _ in answers] + [0] * (len(spans) - len(answers))
    true_all = [yes + no for yes, no in answers] + [0] * (len(spans) - len(answers))
    true_again = [again for again, _, _ in cohorts] + [0] * (len(spans) - len(cohorts))
    true_offenders = [again + clean for again, clean, _ in cohorts] + [0] * (len(spans) - len(cohorts))
    lines = {
        "satisfied": ([p.victim_satisfaction.count for p in figures.periods], figures.total.victim_satisfaction.count,
                      true_yes, [a - y for a, y in zip(true_all, true_yes, strict=True)]),
        "answers": ([p.victim_satisfaction.of for p in figures.periods], figures.total.victim_satisfaction.of,
                    true_all, None),
        "reoffended": ([p.reoffending.completed.reoffended for p in figures.periods],
                       figures.total.reoffending.completed.reoffended, true_again,
                       [o - a for o, a in zip(true_offenders, true_again, strict=True)]),
        "offenders": ([p.reoffending.completed.offenders for p in figures.periods],
                      figures.total.reoffending.completed.offenders, true_offenders, None),
    }  # fmt: skip
    for name, (shown, total, true, complement) in lines.items():
        hidden = [value is None for value in shown]
        assert all(v == t for v, t in zip(shown, true, strict=True) if v is not None), name
        rest = complement if complement is not None else [SUPPRESS_BELOW] * len(true)
        for value, left, is_hidden in [*zip(true, rest, hidden, strict=True), (sum(true), sum(rest), total is None)]:
            assert is_hidden or (value >= SUPPRESS_BELOW and left >= SUPPRESS_BELOW), (name, true, hidden)
        assert total is None or total == sum(true)
        if total is not None:
            assert recoverable(true, hidden) == [], (name, true, hidden)
            if complement is not None:
                assert recoverable(complement, hidden) == [], (name, complement, hidden)
    for p in [*figures.periods, figures.total]:
        completed = p.reoffending.completed
        assert (completed.later_offences is None) == (completed.reoffended is None)
        assert (p.victim_satisfaction.rate is None) or None not in (p.victim_satisfaction.count,
                                                                   p.victim_satisfaction.of)  # fmt: skip


def test_a_fixed_order_is_kept_for_the_categories_shown() -> None:
    rows = monitoring_rows([("25-34", False, False)] * 5 + [("18-24", False, False)] * 9, ["18-24", "25-34"])
    assert [r.category for r in rows] == ["18-24", "25-34"]


def test_bars_scale_to_the_largest_count_or_to_a_hundred_percent_with_the_national_line_placed_on_the_scale() -> None:
    drawn = bars([("Jan", 4.0, "4"), ("Feb", 8.0, "8"), ("Mar", None, "n/a")], scale_max=8.0)
    assert [(b.width, b.text) for b in drawn] == [(BAR_SPAN / 2, "4"), (BAR_SPAN, "8"), (0, "n/a")]
    assert drawn[1].y > drawn[0].y
    rates = chart("s", "Satisfaction", "", [("Jan", 0.5, "50.0%")], Table("t", [], []), percent=True,
                  reference=(0.85, "National 85%"))  # fmt: skip
    assert rates.bars[0].width == BAR_SPAN / 2
    assert rates.reference is not None and rates.reference.x == round(BAR_LEFT + BAR_SPAN * 0.85, 1)
    assert chart("z", "None yet", "", [("Jan", 0.0, "0")], Table("t", [], []), percent=False).bars[0].width == 0
