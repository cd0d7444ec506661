"""GPS time, its conversion to Kafka timestamps, and the injectable clocks.

Inside the project every time is GPS seconds (float64). A Kafka message timestamp
is the *Unix* time in milliseconds of the data it carries, so that the broker's
time-based retention and ``offsets_for_times`` behave (see DESIGN.md, "Time").
Leap seconds come from LAL, the library gwpy already uses to write frames.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

import lal

#: Unix time of the GPS epoch, 1980-01-06T00:00:00 UTC.
GPS_EPOCH_UNIX = 315964800


def leap_seconds(gps: float) -> int:
    """Return GPS - UTC in whole seconds at ``gps`` (18 since 2017)."""
    return int(lal.GPSLeapSeconds(int(gps)))


def gps_to_unix(gps: float) -> float:
    """Convert GPS seconds to Unix seconds (UTC, without leap seconds)."""
    return gps + GPS_EPOCH_UNIX - leap_seconds(gps)


def unix_to_gps(unix: float) -> float:
    """Convert Unix seconds to GPS seconds."""
    approx = unix - GPS_EPOCH_UNIX
    # the leap-second count at the GPS instant, found from the approximation
    return approx + leap_seconds(approx + leap_seconds(approx))


def gps_to_kafka_ms(gps: float) -> int:
    """Kafka message timestamp (Unix milliseconds) for data at ``gps``."""
    return round(gps_to_unix(gps) * 1000.0)


def kafka_ms_to_gps(ms: int) -> float:
    """GPS seconds of a Kafka message timestamp in Unix milliseconds."""
    return unix_to_gps(ms / 1000.0)


def gps_now() -> float:
    """The current wall-clock GPS time."""
    return unix_to_gps(time.time())


class Clock(Protocol):
    """A source of 'now' in GPS seconds, and a way to wait.

    The cadence manager and stream processor take a clock so that tests and replays
    never sleep on real time.
    """

    def now(self) -> float:
        """Current GPS time as this clock sees it."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time (or until woken)."""
        ...


class WallClock:
    """Live mode: wall-clock GPS time; ``sleep`` can be interrupted by :meth:`wake`."""

    def __init__(self) -> None:
        self._wake = threading.Event()

    def now(self) -> float:
        return gps_now()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._wake.wait(seconds)
            self._wake.clear()

    def wake(self) -> None:
        """End a current or the next :meth:`sleep` early (used on SIGTERM)."""
        self._wake.set()


class ManualClock:
    """Tests: time stands still until advanced; ``sleep`` advances it instantly."""

    def __init__(self, start: float) -> None:
        self._now = float(start)

    def now(self) -> float:
        return self._now

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._now += seconds

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        self._now += seconds

    def set(self, gps: float) -> None:
        """Jump the clock to ``gps``."""
        self._now = float(gps)


class ScaledClock:
    """Accelerated time for demos and replays: GPS now runs ``speed`` times faster.

    ``now() = start + speed * (real seconds since creation)``; ``sleep(s)`` sleeps
    ``s / speed`` real seconds (interruptible by :meth:`wake`).
    """

    def __init__(self, start: float, speed: float) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.start = float(start)
        self.speed = float(speed)
        self._t0 = time.monotonic()
        self._wake = threading.Event()

    def now(self) -> float:
        return self.start + self.speed * (time.monotonic() - self._t0)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._wake.wait(seconds / self.speed)

    def wake(self) -> None:
        """End sleeps early (on stop)."""
        self._wake.set()
