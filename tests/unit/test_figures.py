"""The figures' pure parts (services/api/figures.py, figures_page.py): periods in UK time, small-cell suppression, and
the charts' geometry. The figures themselves, from a read model, are tests/integration/test_figures.py's."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from services.api.figures import (
    OTHER,
    FiguresRangeError,
    Period,
    PeriodKind,
    monitoring_rows,
    periods_between,
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


def test_small_categories_are_pooled_and_every_count_under_five_withheld() -> None:
    people = [("b", True, False)] * 7 + [("a", True, True)] * 5 + [("rare", True, True)] * 2 + [(None, False, True)] * 2
    rows = monitoring_rows(people)
    assert [(r.category, r.people, r.direct_rj, r.indirect_rj) for r in rows] == [
        ("b", 7, 7, None),  # the largest first; no one in b had indirect RJ: 0 is under 5 too
        ("a", 5, 5, 5),
        (OTHER, None, None, None),  # "rare" (2) and not recorded (2): 4 people, withheld, their names shown nowhere
    ]
    assert (rows[0].direct_rj_rate, rows[0].indirect_rj_rate, rows[1].indirect_rj_rate) == (1.0, None, 1.0)
    assert monitoring_rows([]) == []


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
