"""Working days in England and Wales, for the Victims' Code deadlines.

Bank holidays come from the ``holidays`` package (England's list, which Wales shares), so a new year
or a one-off holiday (a coronation, a jubilee) needs a dependency update, not a code change.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays

LONDON = ZoneInfo("Europe/London")


@lru_cache(maxsize=64)
def _bank_holidays(year: int) -> frozenset[date]:
    return frozenset(holidays.country_holidays("GB", subdiv="ENG", years=year).keys())


def is_working_day(day: date) -> bool:
    return day.weekday() < 5 and day not in _bank_holidays(day.year)


@lru_cache(maxsize=4096)
def add_working_days(start: date, days: int) -> date:
    """The date ``days`` working days after ``start`` (``start`` itself never counts). Cached: intake asks it for
    every crime, nearly always about the same few dates."""
    current = start
    remaining = days
    while remaining > 0:
        current += timedelta(days=1)
        if is_working_day(current):
            remaining -= 1
    return current


def deadline_after(moment: datetime, working_days: int) -> tuple[date, datetime]:
    """The due date ``working_days`` after ``moment`` (in UK local time) and the instant it ends."""
    return _deadline_on(moment.astimezone(LONDON).date(), working_days)


@lru_cache(maxsize=4096)
def _deadline_on(start: date, working_days: int) -> tuple[date, datetime]:
    due_date = add_working_days(start, working_days)
    return due_date, datetime.combine(due_date + timedelta(days=1), time(0), tzinfo=LONDON)
