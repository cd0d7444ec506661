"""CadenceManager and DataClock on injected clocks: nothing here sleeps on real time."""

from __future__ import annotations

import pytest

from idq_common.exceptions import MaxIterError
from idq_common.gpstime import ManualClock
from idq_common.streaming.cadence import CadenceManager, DataClock

T0 = 1_400_000_000.0


class NoSleepClock(ManualClock):
    """A ManualClock that records sleeps (they advance it instantly)."""

    def __init__(self, start: float) -> None:
        super().__init__(start)
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        super().sleep(seconds)


def test_integer_alignment() -> None:
    cm = CadenceManager(T0 + 5.3, stride=4, delay=1, clock=ManualClock(T0))
    assert cm.timestamp == T0 + 4  # floored to a multiple of the stride
    cm = CadenceManager(
        T0 + 5.3, stride=4, delay=1, clock=ManualClock(T0), enforce_integer_strides=False
    )
    assert cm.timestamp == T0 + 5.3


def test_wait_sleeps_on_the_clock_until_due() -> None:
    clock = NoSleepClock(T0)
    cm = CadenceManager(T0, stride=4, delay=2, clock=clock)
    assert not cm.due()
    assert cm.wait() is True
    assert clock.now() == T0 + 6
    assert clock.sleeps == [6.0]
    assert cm.due()


def test_poll_yields_several_strides_after_a_pause() -> None:
    clock = ManualClock(T0)
    cm = CadenceManager(T0, stride=1, delay=0.5, clock=clock)
    assert list(cm.poll()) == []
    clock.advance(5.6)  # strides ending at +1..+5 are due (end + 0.5 <= +5.6)
    got = list(cm.poll())
    assert got == [(T0 + k, T0 + k + 1) for k in range(5)]
    assert cm.timestamp == T0 + 5
    assert list(cm.poll()) == []


def test_poll_advances_as_the_caller_consumes() -> None:
    clock = ManualClock(T0 + 10)
    cm = CadenceManager(T0, stride=2, delay=0, clock=clock)
    gen = cm.poll()
    assert next(gen) == (T0, T0 + 2)
    assert cm.timestamp == T0 + 2
    gen.close()  # caller stops early: the next poll resumes where it stopped
    assert next(cm.poll()) == (T0 + 2, T0 + 4)


def test_max_timestamp_clips_and_finishes() -> None:
    clock = ManualClock(T0 + 100)
    cm = CadenceManager(T0, stride=4, delay=0, clock=clock, max_timestamp=T0 + 10)
    assert list(cm.poll()) == [(T0, T0 + 4), (T0 + 4, T0 + 8), (T0 + 8, T0 + 10)]
    assert cm.finished
    assert cm.wait() is False
    assert list(cm.poll()) == []


def test_max_lag_raises_and_skip_ahead_reports_the_gap() -> None:
    clock = ManualClock(T0)
    cm = CadenceManager(T0, stride=4, delay=1, clock=clock, max_lag_strides=3)
    clock.advance(4 * 10 + 1)  # ten strides due
    with pytest.raises(MaxIterError) as err:
        list(cm.poll())
    assert err.value.skipped == (T0, T0 + 36)
    assert cm.timestamp == T0  # raising does not move anything
    assert cm.skip_ahead() == (T0, T0 + 36)
    assert list(cm.poll()) == [(T0 + 36, T0 + 40)]  # only the latest stride remains


def test_max_lag_seconds_and_tight_bounds_make_progress() -> None:
    clock = ManualClock(T0 + 9)
    cm = CadenceManager(T0, stride=4, delay=0, clock=clock, max_lag_seconds=1)
    with pytest.raises(MaxIterError):
        next(cm.poll())
    cm.skip_ahead()
    # one due stride is left; a bound tighter than that must not raise forever
    assert list(cm.poll()) == [(T0 + 4, T0 + 8)]


class FakeSource:
    """A watermark that moves by `step` per advance call, up to `stop`."""

    def __init__(self, start: float, step: float, stop: float) -> None:
        self.wm: float | None = None
        self.start, self.step, self.stop = start, step, stop
        self.calls = 0

    def watermark(self) -> float | None:
        return self.wm

    def advance(self, timeout: float) -> bool:
        self.calls += 1
        nxt = self.start if self.wm is None else self.wm + self.step
        if nxt > self.stop:
            return False
        self.wm = nxt
        return True


def test_data_clock_follows_the_watermark_and_times_out() -> None:
    fake_time = [0.0]

    def monotonic() -> float:
        fake_time[0] += 0.5  # every look at the real clock costs half a second
        return fake_time[0]

    src = FakeSource(T0 + 1, step=1, stop=T0 + 8)
    clock = DataClock(src, start=T0, idle_timeout=5, monotonic=monotonic)
    cm = CadenceManager(T0, stride=2, delay=1, clock=clock)
    assert cm.wait()
    assert clock.now() >= T0 + 3
    assert list(cm.poll()) == [(T0, T0 + 2)]
    # data stops at T0+8; waiting for the stride ending T0+10 times out and moves on
    for _ in range(3):
        cm.wait()
        list(cm.poll())
    assert clock.timeouts >= 1
    assert cm.timestamp >= T0 + 8
