"""Quiet hours: a message due outside them waits for the next opening, in Europe/London."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.notify import OpeningHours
from services.notify.quiet_hours import NeverOpen, is_open, next_allowed, opening_hours

LONDON = ZoneInfo("Europe/London")
DEFAULT = opening_hours(None)


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=LONDON)  # type: ignore[misc]


def test_a_message_due_at_22_on_a_friday_goes_at_9_on_saturday() -> None:
    assert next_allowed(local(2026, 3, 6, 22, 0), DEFAULT) == local(2026, 3, 7, 9, 0)


def test_a_message_due_at_18_on_a_saturday_goes_at_8_on_monday() -> None:
    assert next_allowed(local(2026, 3, 7, 18, 0), DEFAULT) == local(2026, 3, 9, 8, 0)


def test_a_message_due_on_a_sunday_goes_at_8_on_monday() -> None:
    assert next_allowed(local(2026, 3, 8, 12, 0), DEFAULT) == local(2026, 3, 9, 8, 0)


def test_a_message_due_inside_the_hours_goes_at_once() -> None:
    moment = local(2026, 3, 4, 13, 17, 5)
    assert next_allowed(moment, DEFAULT) == moment


def test_the_closing_minute_is_outside_and_the_opening_minute_inside() -> None:
    assert next_allowed(local(2026, 3, 4, 20, 0), DEFAULT) == local(2026, 3, 5, 8, 0)
    assert next_allowed(local(2026, 3, 4, 8, 0), DEFAULT) == local(2026, 3, 4, 8, 0)


def test_a_bank_holiday_monday_waits_for_tuesday() -> None:
    # Easter Monday 2026 is 6 April; the message came on the Saturday evening before.
    assert next_allowed(local(2026, 4, 4, 17, 30), DEFAULT) == local(2026, 4, 7, 8, 0)
    # Good Friday (3 April 2026) is a bank holiday too: Thursday evening waits for Saturday morning.
    assert next_allowed(local(2026, 4, 2, 21, 0), DEFAULT) == local(2026, 4, 4, 9, 0)


def test_a_persons_own_hours_replace_the_default() -> None:
    own = opening_hours("mon-fri 10:00-16:00")
    assert next_allowed(local(2026, 3, 4, 9, 0), own) == local(2026, 3, 4, 10, 0)
    assert next_allowed(local(2026, 3, 7, 10, 0), own) == local(2026, 3, 9, 10, 0)  # no Saturdays for them
    evenings = opening_hours("mon-sun 18:00-22:00; hol 18:00-22:00")
    assert next_allowed(local(2026, 4, 6, 12, 0), evenings) == local(2026, 4, 6, 18, 0)  # Easter Monday, own hours


def test_the_hours_keep_their_wall_clock_across_the_spring_clock_change() -> None:
    # Clocks go forward on Sunday 29 March 2026: Saturday 18:00 GMT waits for Monday 08:00 BST (07:00 UTC).
    assert next_allowed(local(2026, 3, 28, 18, 0), DEFAULT) == datetime(2026, 3, 30, 7, 0, tzinfo=UTC)
    # A window in the skipped hour still opens, at the instant that wall time maps to.
    night = opening_hours("sun 01:30-03:00")
    opens = next_allowed(datetime(2026, 3, 29, 0, 0, tzinfo=UTC), night)
    assert opens.astimezone(LONDON).date() == local(2026, 3, 29).date()


def test_the_hours_keep_their_wall_clock_across_the_autumn_clock_change() -> None:
    # Clocks go back on Sunday 25 October 2026: Saturday 18:00 BST waits for Monday 08:00 GMT (08:00 UTC).
    assert next_allowed(local(2026, 10, 24, 18, 0), DEFAULT) == datetime(2026, 10, 26, 8, 0, tzinfo=UTC)
    # A window that spans the repeated hour lasts an hour longer, and a moment in the second 01:30 is inside it.
    night = opening_hours("sun 01:00-03:00")
    second_half_past_one = datetime(2026, 10, 25, 1, 30, tzinfo=UTC)  # 01:30 GMT, after 01:30 BST
    assert is_open(second_half_past_one, night)


def test_a_window_to_midnight_covers_the_last_minutes_of_the_day() -> None:
    late = opening_hours("mon-sun 20:00-24:00")
    assert is_open(local(2026, 3, 4, 23, 59), late)
    assert next_allowed(local(2026, 3, 5, 0, 0), late) == local(2026, 3, 5, 20, 0)


def test_hours_that_never_open_are_refused() -> None:
    with pytest.raises(NeverOpen):
        next_allowed(local(2026, 3, 4, 9, 0), OpeningHours(weekdays=((),) * 7))


@given(st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)))
def test_the_next_allowed_moment_is_never_earlier_is_open_and_nothing_open_lies_between(moment: datetime) -> None:
    allowed = next_allowed(moment, DEFAULT)
    assert allowed >= moment and is_open(allowed, DEFAULT)
    local_allowed = allowed.astimezone(LONDON)
    assert local_allowed.weekday() != 6
    if allowed > moment:  # it waited: it opens on the hour of a window's start, and just before was closed
        assert (local_allowed.hour, local_allowed.minute) in {(8, 0), (9, 0)}
        assert not is_open(allowed - timedelta(seconds=1), DEFAULT)
