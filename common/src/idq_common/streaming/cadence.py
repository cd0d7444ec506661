"""The cadence manager: when is the next stride due, and which strides are due now.

A stage runs forever on *strides* of GPS time. The :class:`CadenceManager` holds a
``timestamp`` (start of the next stride to hand out), a ``stride`` and a ``delay``
(how long after a stride ends its data can be expected to be complete). A stride
``[t, t + stride)`` is *due* once ``clock.now() >= t + stride + delay``.

The clock is injected (:class:`idq_common.gpstime.Clock`): wall-clock GPS in live
mode, :class:`DataClock` (the data's own watermark) in replay, and
:class:`~idq_common.gpstime.ManualClock` in tests, so no test sleeps on real time.

If the stage falls further behind than ``max_lag_strides`` / ``max_lag_seconds``,
:meth:`CadenceManager.poll` raises :class:`~idq_common.exceptions.MaxIterError`
carrying the span :meth:`CadenceManager.skip_ahead` would skip; the caller skips
and publishes that span as a gap (never silently lost).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from typing import Protocol

from idq_common.exceptions import MaxIterError
from idq_common.gpstime import Clock

log = logging.getLogger(__name__)

Span = tuple[float, float]


class CadenceManager:
    """Hand out due strides of GPS time on an injected clock.

    Parameters
    ----------
    timestamp : float
        GPS start of the first stride. Floored to a multiple of ``stride`` when
        ``enforce_integer_strides`` (so strides of every stage line up, and a
        stride processed twice has the same name).
    stride : float
        Stride length, seconds (> 0).
    delay : float
        Seconds after a stride's end before it is due (>= 0): the latency the
        data needs to arrive, and the look-ahead a stream processor may use.
    clock : Clock
        Source of "now" and of sleeping.
    max_timestamp : float, optional
        GPS end of the run; the last stride is clipped to it and the manager is
        :attr:`finished` once the timestamp reaches it.
    enforce_integer_strides : bool
        Align the timestamp to a multiple of ``stride``.
    max_lag_strides, max_lag_seconds : float, optional
        How far behind (due but unprocessed data) :meth:`poll` tolerates before
        raising :class:`MaxIterError`. ``None``: no bound.
    """

    def __init__(
        self,
        timestamp: float,
        stride: float,
        delay: float,
        clock: Clock,
        max_timestamp: float | None = None,
        enforce_integer_strides: bool = True,
        max_lag_strides: float | None = None,
        max_lag_seconds: float | None = None,
    ) -> None:
        if not stride > 0:
            raise ValueError(f"stride must be > 0, got {stride}")
        if delay < 0:
            raise ValueError(f"delay must be >= 0, got {delay}")
        for name, bound in (
            ("max_lag_strides", max_lag_strides),
            ("max_lag_seconds", max_lag_seconds),
        ):
            if bound is not None and bound <= 0:
                raise ValueError(f"{name} must be > 0, got {bound}")
        self.stride = float(stride)
        self.delay = float(delay)
        self.clock = clock
        self.max_timestamp = None if max_timestamp is None else float(max_timestamp)
        self.enforce_integer_strides = enforce_integer_strides
        self.max_lag_strides = max_lag_strides
        self.max_lag_seconds = max_lag_seconds
        self.timestamp = self._align(float(timestamp))

    # -- state ---------------------------------------------------------------------
    def _align(self, t: float) -> float:
        if self.enforce_integer_strides:
            return math.floor(t / self.stride) * self.stride
        return t

    @property
    def finished(self) -> bool:
        """True once the timestamp reached ``max_timestamp``."""
        return self.max_timestamp is not None and self.timestamp >= self.max_timestamp

    def next_stride(self) -> Span:
        """The next stride ``(start, end)`` to hand out (clipped to ``max_timestamp``)."""
        end = self.timestamp + self.stride
        if self.max_timestamp is not None:
            end = min(end, self.max_timestamp)
        return (self.timestamp, end)

    def due_at(self) -> float:
        """Clock time at which the next stride becomes due."""
        return self.next_stride()[1] + self.delay

    def due(self) -> bool:
        """True when the next stride is due now (and the manager is not finished)."""
        return not self.finished and self.clock.now() >= self.due_at()

    def lag(self, now: float | None = None) -> float:
        """Seconds of data available but not yet handed out (``now - delay - timestamp``)."""
        now = self.clock.now() if now is None else now
        return now - self.delay - self.timestamp

    def latest_due_end(self, now: float | None = None) -> float:
        """End of the last stride that is due at ``now`` (== timestamp if none is)."""
        now = self.clock.now() if now is None else now
        n = max(0, math.floor((now - self.delay - self.timestamp) / self.stride))
        end = self.timestamp + n * self.stride
        if self.max_timestamp is not None:
            end = min(end, max(self.timestamp, self.max_timestamp))
        return end

    # -- waiting and polling -------------------------------------------------------
    def wait(self) -> bool:
        """Sleep on the clock until the next stride is due.

        Returns
        -------
        bool
            False (immediately) when finished, True once a stride is due.
        """
        while not self.finished:
            remaining = self.due_at() - self.clock.now()
            if remaining <= 0:
                return True
            log.debug("cadence: next stride %s due in %.3f s", self.next_stride(), remaining)
            self.clock.sleep(remaining)
        return False

    def _check_lag(self, now: float) -> None:
        lag = self.lag(now)
        too_far = (self.max_lag_seconds is not None and lag > self.max_lag_seconds) or (
            self.max_lag_strides is not None and lag / self.stride > self.max_lag_strides
        )
        skipped = self._skip_span(now)
        # only raise when skipping would skip something: a tight bound (< 2 strides)
        # must not make the caller skip forever without making progress
        if too_far and skipped[1] > skipped[0]:
            raise MaxIterError(
                f"cadence fell {lag:.1f} s ({lag / self.stride:.1f} strides) behind at "
                f"timestamp {self.timestamp}; would skip [{skipped[0]}, {skipped[1]})",
                skipped=skipped,
            )

    def poll(self) -> Iterator[Span]:
        """Yield every due stride, oldest first, re-reading the clock each time.

        The timestamp advances as each stride is handed out, so after a pause the
        generator yields several strides, and a caller that stops early resumes
        at the first stride it did not receive.

        Raises
        ------
        MaxIterError
            When further behind than ``max_lag_strides`` / ``max_lag_seconds``;
            ``.skipped`` is the span :meth:`skip_ahead` would skip.
        """
        while not self.finished:
            now = self.clock.now()
            if now < self.due_at():
                return
            self._check_lag(now)
            stride = self.next_stride()
            self.timestamp = stride[1]
            yield stride

    def _skip_span(self, now: float) -> Span:
        # keep exactly the most recent due stride; everything before it is skipped
        n = math.floor((now - self.delay - self.timestamp) / self.stride)
        new = self.timestamp + max(0, n - 1) * self.stride
        if self.max_timestamp is not None:
            new = min(new, max(self.timestamp, self.max_timestamp))
        return (self.timestamp, new)

    def skip_ahead(self) -> Span:
        """Move the timestamp to the latest due stride; return the skipped ``(start, end)``."""
        skipped = self._skip_span(self.clock.now())
        if skipped[1] > skipped[0]:
            log.warning(
                "cadence: skipping ahead over [%s, %s) (%.1f s)",
                skipped[0],
                skipped[1],
                skipped[1] - skipped[0],
            )
        self.timestamp = skipped[1]
        return skipped


# -- replay clock ----------------------------------------------------------------------
class WatermarkSource(Protocol):
    """What :class:`DataClock` needs from a data source."""

    def watermark(self) -> float | None:
        """GPS time up to which the source has complete data (None: nothing yet)."""
        ...

    def advance(self, timeout: float) -> bool:
        """Consume more data for at most ``timeout`` real seconds; True if any arrived."""
        ...


class DataClock:
    """Replay clock: *now* is the data watermark of a source.

    ``sleep(seconds)`` pumps the source until its watermark has moved ``seconds``
    past the current now. If nothing arrives for ``idle_timeout`` real seconds the
    clock stops waiting and moves now forward anyway, so the cadence goes on and
    the missing data is reported by the source (as incomplete / no data) instead
    of the loop hanging forever.

    Parameters
    ----------
    source : WatermarkSource
        E.g. :class:`idq_common.streaming.kafka_source.KafkaFeatureSource`.
    start : float
        GPS now before any data arrived.
    idle_timeout : float
        Real seconds without any new data after which a sleep gives up waiting.
    poll_interval : float
        Real seconds per ``source.advance`` call.
    monotonic : callable
        Real-time clock (injectable for tests).
    """

    def __init__(
        self,
        source: WatermarkSource,
        start: float,
        idle_timeout: float = 30.0,
        poll_interval: float = 0.2,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self._floor = float(start)
        self.idle_timeout = idle_timeout
        self.poll_interval = poll_interval
        self._monotonic = monotonic
        self.timeouts = 0
        self._woken = False

    def wake(self) -> None:
        """End the current or next :meth:`sleep` early (a stop was requested)."""
        self._woken = True

    def now(self) -> float:
        wm = self.source.watermark()
        return self._floor if wm is None else max(self._floor, wm)

    def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        target = self.now() + seconds
        last_progress = self._monotonic()
        while self.now() < target:
            if self._woken:
                self._woken = False
                return
            if self.source.advance(self.poll_interval):
                last_progress = self._monotonic()
            elif self._monotonic() - last_progress >= self.idle_timeout:
                self.timeouts += 1
                log.warning(
                    "data clock: no data for %.1f s (watermark %s); moving now to %s",
                    self.idle_timeout,
                    self.source.watermark(),
                    target,
                )
                self._floor = target
                return
