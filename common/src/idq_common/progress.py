"""A periodic progress line for long work: done of total, rate and ETA.

One small helper for the demo, replays, benchmarks and ``idq ingest files``: the caller
reports how much is done (``update``/``advance``); at most every ``every`` seconds a
line like ``demo: 120/900 strides (13%), 4.1 strides/s, ETA 3m10s`` goes to ``emit``
(stderr by default). No terminal control characters, so the line reads the same in a
log file and in a CI transcript.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def format_duration(seconds: float) -> str:
    """``45s``, ``3m10s``, ``2h05m``; ``?`` when unknown."""
    if not seconds >= 0 or seconds == float("inf"):
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class Progress:
    """Done-of-total with a periodic line.

    Parameters
    ----------
    label : str
        What is being done (the line's prefix).
    total : float
        Units of work in all (strides, files, seconds of data). Zero or less: unknown,
        the line then shows no percentage or ETA.
    unit : str
        Name of one unit, plural (``strides``).
    every : float
        Seconds between lines.
    emit : callable
        Where a line goes; stderr by default.
    clock : callable
        Monotonic seconds; injectable for tests.
    """

    def __init__(
        self,
        label: str,
        total: float,
        unit: str = "strides",
        every: float = 10.0,
        emit: Callable[[str], None] = _stderr,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.total = float(total)
        self.unit = unit
        self.every = float(every)
        self.emit = emit
        self.clock = clock
        self.t0 = clock()
        self.done = 0.0
        self._last = self.t0

    def rate(self) -> float:
        """Units per second since the start."""
        elapsed = self.clock() - self.t0
        return self.done / elapsed if elapsed > 0 else 0.0

    def eta(self) -> float:
        """Seconds left at the rate so far; ``inf`` when unknown."""
        rate = self.rate()
        if self.total <= 0 or rate <= 0:
            return float("inf")
        return max(self.total - self.done, 0.0) / rate

    def line(self) -> str:
        """The progress line as it stands."""
        done = f"{self.done:.0f}"
        if self.total > 0:
            pct = 100.0 * min(self.done / self.total, 1.0)
            done = f"{self.done:.0f}/{self.total:.0f} {self.unit} ({pct:.0f}%)"
        else:
            done = f"{done} {self.unit}"
        text = f"{self.label}: {done}, {self.rate():.3g} {self.unit}/s"
        if self.total > 0:
            text += f", ETA {format_duration(self.eta())}"
        return text

    def update(self, done: float) -> None:
        """Set the amount done; emits a line when ``every`` seconds have passed."""
        self.done = float(done)
        now = self.clock()
        if now - self._last >= self.every:
            self._last = now
            self.emit(self.line())

    def advance(self, n: float = 1.0) -> None:
        """Add ``n`` units done."""
        self.update(self.done + n)

    def finish(self) -> None:
        """The final line, always emitted: total done, mean rate, elapsed time."""
        elapsed = self.clock() - self.t0
        self.emit(
            f"{self.label}: {self.done:.0f} {self.unit} in {format_duration(elapsed)} "
            f"({self.rate():.3g} {self.unit}/s)"
        )
