"""Quiet hours: the next moment a message may reach someone, in Europe/London, from opening hours.

The default is West Mercia Police's victim advice line: Monday to Friday 08:00 to 20:00, Saturday 09:00 to 17:00,
nothing on Sundays or bank holidays (England and Wales, from ``services.runtime.calendar``). A person's own hours
(``rj.notify.set-preferences``) replace it for them; the setting ``NOTIFY_QUIET_HOURS`` replaces it for everyone.
The compact form (``"mon-fri 08:00-20:00; sat 09:00-17:00"``) is the contract's (``schemas.notify``).

Pure: no I/O. Local times are turned into instants with ``zoneinfo``, so a window keeps its wall-clock hours
across the clock changes: 08:00 is 08:00 BST in summer and 08:00 GMT in winter. A window that starts in the hour
the clocks skip (01:30 on the last Sunday of March) starts at the instant that wall time maps to (fold 0).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache

from schemas.notify import OpeningHours, parse_opening_hours
from services.runtime.calendar import LONDON, is_working_day

DEFAULT_HOURS_TEXT = "mon-fri 08:00-20:00; sat 09:00-17:00"
"""West Mercia Police's victim advice line hours; bank holidays closed."""

SEARCH_DAYS = 400
"""How far ahead an opening is looked for: a year and a bit covers any weekly pattern with bank holidays."""


class NeverOpen(ValueError):
    """Opening hours with no window in the next ``SEARCH_DAYS`` days: nothing could ever be sent."""


@lru_cache(maxsize=256)
def opening_hours(text: str | None, default: str = DEFAULT_HOURS_TEXT) -> OpeningHours:
    """``text`` read (cached: a handful of distinct texts serve every person), or ``default`` when it is none."""
    return parse_opening_hours(text or default)


def _is_bank_holiday(day: date) -> bool:
    return day.weekday() < 5 and not is_working_day(day)


def windows_on(day: date, hours: OpeningHours) -> tuple[tuple[datetime, datetime], ...]:
    """The instants (UTC) ``day``'s windows open and close, in order."""
    spans = hours.bank_holidays if _is_bank_holiday(day) else hours.weekdays[day.weekday()]
    out = []
    for start, end in spans:
        opens = datetime.combine(day, start, tzinfo=LONDON).astimezone(UTC)
        close_day = day + timedelta(days=1) if end == time(0) else day
        closes = datetime.combine(close_day, end, tzinfo=LONDON).astimezone(UTC)
        out.append((opens, closes))
    return tuple(out)


def next_allowed(moment: datetime, hours: OpeningHours) -> datetime:
    """``moment`` itself if it falls inside a window, else the start of the next window (UTC). Raises
    ``NeverOpen`` for hours with no window at all ahead."""
    moment = moment.astimezone(UTC)
    first = moment.astimezone(LONDON).date() - timedelta(days=1)  # a window from yesterday may run past midnight
    for offset in range(SEARCH_DAYS):
        for opens, closes in windows_on(first + timedelta(days=offset), hours):
            if opens <= moment < closes:
                return moment
            if opens >= moment:
                return opens
    raise NeverOpen("these opening hours have no window in the next year")


def is_open(moment: datetime, hours: OpeningHours) -> bool:
    return next_allowed(moment, hours) == moment.astimezone(UTC)
