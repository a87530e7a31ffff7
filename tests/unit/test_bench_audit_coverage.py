"""bench/audit.py measures the audit service's own lag record by record (``Coverage``): a record counts as in the
log only from the first sample that saw it there, and one that never got there is never counted as caught up.
(The first two cases were written by a reviewer, against an earlier version that counted both as on time.)"""

import math

from bench.audit import CAUGHT_UP_S, Coverage


def test_a_record_published_after_the_watch_ended_is_not_counted_as_logged_at_once() -> None:
    coverage = Coverage()
    coverage.note(100.0, ("rj.notify", 0), 5)  # offsets 0..4 in the log by t=100
    published = {("rj.notify", 0): [(4, 99.5), (5, 120.0)]}  # offset 5 published at t=120, after the watch (t=110)
    delays = coverage.delays(published, since=90.0, until=110.0)
    assert delays == [(9.5, 10.0, 0.5)]


def test_a_record_never_seen_in_the_log_is_not_counted_as_caught_up() -> None:
    coverage = Coverage()
    published = {("rj.notify", 0): [(0, 109.5)]}  # never in the log; published 0.5 s before the watch ended
    delays = coverage.delays(published, since=90.0, until=110.0)
    assert not any(d <= CAUGHT_UP_S for _, _, d in delays), delays


def test_a_record_never_logged_and_long_published_waited_for_ever_at_the_watchs_end() -> None:
    coverage = Coverage()
    coverage.note(100.0, ("rj.audit", 1), 1)
    published = {("rj.audit", 1): [(0, 95.0), (1, 100.5)]}  # offset 1 never logged, published 9.5 s before the end
    delays = coverage.delays(published, since=90.0, until=110.0)
    assert delays[0] == (5.0, 10.0, 5.0)
    assert delays[1][:2] == (10.5, 20.0) and math.isinf(delays[1][2])
