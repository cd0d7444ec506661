"""The shared progress line: periodic, with rate and ETA."""

from __future__ import annotations

from idq_common.progress import Progress, format_duration


class FakeClock:
    """A clock the test advances (time is an input of the helper)."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_lines_are_periodic_with_rate_and_eta() -> None:
    clock, lines = FakeClock(), []
    p = Progress("demo", 900, unit="strides", every=10.0, emit=lines.append, clock=clock)
    clock.t += 5
    p.update(20)
    assert lines == []  # not yet ten seconds
    clock.t += 5
    p.update(40)
    assert lines == ["demo: 40/900 strides (4%), 4 strides/s, ETA 3m35s"]
    clock.t += 1
    p.advance(4)
    assert len(lines) == 1
    clock.t += 9
    p.advance(0)
    assert lines[-1].startswith("demo: 44/900 strides (5%), 2.2 strides/s, ETA 6m29s")
    p.finish()
    assert lines[-1] == "demo: 44 strides in 20s (2.2 strides/s)"


def test_unknown_total_has_no_eta() -> None:
    clock, lines = FakeClock(), []
    p = Progress("ingest", 0, unit="files", every=0.0, emit=lines.append, clock=clock)
    clock.t += 2
    p.advance(3)
    assert lines == ["ingest: 3 files, 1.5 files/s"]


def test_format_duration() -> None:
    assert format_duration(44.4) == "44s"
    assert format_duration(190) == "3m10s"
    assert format_duration(7500) == "2h05m"
    assert format_duration(float("inf")) == "?"
    assert format_duration(float("nan")) == "?"
