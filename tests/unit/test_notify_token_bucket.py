"""The client-side rate limit in front of GOV.UK Notify, on a simulated clock: bursts up to the bucket's size,
then one send per 1/rate seconds; after a 429 nothing goes until Notify's Retry-After has passed."""

from __future__ import annotations

from services.notify.channels.govuk import TokenBucket


class SimulatedTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_a_burst_passes_then_each_send_waits_its_turn() -> None:
    time = SimulatedTime()
    bucket = TokenBucket(rate_per_s=10, burst=3, clock=time.clock, sleep=time.sleep)
    moments = []
    for _ in range(6):
        await bucket.acquire()
        moments.append(round(time.now, 6))
    assert moments == [0.0, 0.0, 0.0, 0.1, 0.2, 0.3]


async def test_tokens_come_back_while_nothing_is_sent() -> None:
    time = SimulatedTime()
    bucket = TokenBucket(rate_per_s=10, burst=2, clock=time.clock, sleep=time.sleep)
    await bucket.acquire()
    await bucket.acquire()
    time.now += 5.0  # idle: the bucket refills, to its size and no more
    for _ in range(2):
        await bucket.acquire()
    assert time.slept == []
    await bucket.acquire()
    assert [round(s, 6) for s in time.slept] == [0.1]


async def test_after_a_429_nothing_goes_until_the_hold_ends() -> None:
    time = SimulatedTime()
    bucket = TokenBucket(rate_per_s=40, clock=time.clock, sleep=time.sleep)
    bucket.hold(30.0)
    bucket.hold(5.0)  # a shorter hold never shortens a longer one
    await bucket.acquire()
    assert time.now == 30.0
