"""StreamProcessor: padding (stride invariance), flush/retain, gaps, segment failures."""

from __future__ import annotations

import numpy as np
import pytest
from igwn_segments import segment, segmentlist

from idq_common.data.synthetic import SyntheticModel
from idq_common.data.triggers import TriggerSet
from idq_common.exceptions import ConfigError, NoDataError, SegmentQueryError
from idq_common.gpstime import ManualClock
from idq_common.science.features import FeatureSpec, feature_matrix, grid_times
from idq_common.streaming.cadence import CadenceManager
from idq_common.streaming.processor import FunctionSource, StreamProcessor
from idq_common.streaming.segments import AllTime, StaticSegments

T0 = 1_400_000_000.0
SPAN = 32.0
PAD = 1.0
RATE = 128.0


@pytest.fixture(scope="module")
def model() -> SyntheticModel:
    # dense enough that many triggers fall within a window of stride edges
    return SyntheticModel(
        seed=7, n_witness=4, n_noise=4, glitch_rate=1.0, noise_background_rate=4.0
    )


def spec_of(model: SyntheticModel) -> FeatureSpec:
    return FeatureSpec(channels=model.aux_channels, window=PAD)


SEGS = StaticSegments([(T0 - 10, T0 + 9.5), (T0 + 11.25, T0 + 100)])


def streamed_grid(
    model: SyntheticModel, stride: float, wait_strides: int
) -> tuple[np.ndarray, np.ndarray]:
    """Grid features over [T0, T0+SPAN) computed poll by poll."""
    clock = ManualClock(T0)
    cm = CadenceManager(T0, stride, delay=PAD, clock=clock, max_timestamp=T0 + SPAN)
    sp = StreamProcessor(cm, FunctionSource(model.generate), SEGS, pad=PAD)
    times, feats = [], []
    spec = spec_of(model)
    while not cm.finished:
        clock.advance(stride * wait_strides)  # several strides per poll, and partial ones
        batch = sp.poll()
        trig = batch.umbrella.triggers()
        for s, e in batch.strides:
            assert batch.umbrella.start <= s - PAD and batch.umbrella.end >= e + PAD
            t = grid_times(s, e, RATE)
            times.append(t)
            feats.append(feature_matrix(trig, t, spec))
        assert not batch.gaps
    return np.concatenate(times), np.concatenate(feats)


@pytest.mark.parametrize(("stride", "wait_strides"), [(1.0, 3), (4.0, 1), (16.0, 1), (4.0, 2)])
def test_stride_invariance(model: SyntheticModel, stride: float, wait_strides: int) -> None:
    spec = spec_of(model)
    trig = model.generate(T0 - PAD, T0 + SPAN + PAD).restrict(SEGS.query(T0 - PAD, T0 + SPAN + PAD))
    times = grid_times(T0, T0 + SPAN, RATE)
    expected = feature_matrix(trig, times, spec)
    got_t, got = streamed_grid(model, stride, wait_strides)
    assert np.array_equal(got_t, times)
    assert np.array_equal(got, expected)
    # the check has teeth: edges with neighbours' triggers inside the window exist
    assert (expected[:, 2::3] < PAD).sum() > 100


def test_delay_must_cover_pad(model: SyntheticModel) -> None:
    cm = CadenceManager(T0, 4, delay=0.5, clock=ManualClock(T0))
    with pytest.raises(ConfigError, match="delay"):
        StreamProcessor(cm, FunctionSource(model.generate), AllTime(), pad=1.0)


def test_flush_retain(model: SyntheticModel) -> None:
    clock = ManualClock(T0 + PAD)
    cm = CadenceManager(T0, 4, delay=PAD, clock=clock)
    sp = StreamProcessor(cm, FunctionSource(model.generate), AllTime(), pad=PAD, retain=2)
    spans = []
    for _ in range(4):
        clock.advance(4)
        b = sp.poll()
        spans.append((b.umbrella.start, b.umbrella.end))
    # retain=2: the umbrella holds the 2 previous buffers + the new one, plus the pads
    assert spans[3] == (T0 + 4 - PAD, T0 + 16 + PAD)
    sp.flush(retain=0)
    u = sp.umbrella()
    assert (u.start, u.end) == (T0 + 16 - PAD, T0 + 16 + PAD)  # the pad history stays
    expected = model.generate(T0 + 16 - PAD, T0 + 16 + PAD)
    assert len(u.triggers()) == len(expected) > 0
    clock.advance(4)
    b = sp.poll()
    assert (b.umbrella.start, b.umbrella.end) == (T0 + 16 - PAD, T0 + 20 + PAD)


class FlakySource:
    """Raises NoDataError for fetches that overlap `bad`."""

    def __init__(self, model: SyntheticModel, bad: tuple[float, float]) -> None:
        self.model, self.bad = model, bad

    def fetch(self, start: float, end: float) -> TriggerSet:
        if start < self.bad[1] and end > self.bad[0]:
            raise NoDataError(f"nothing for [{start}, {end})")
        return self.model.generate(start, end)


def test_missing_data_is_a_gap_widened_by_pad(model: SyntheticModel) -> None:
    clock = ManualClock(T0)
    cm = CadenceManager(T0, 4, delay=PAD, clock=clock)
    sp = StreamProcessor(cm, FlakySource(model, (T0 + 9.5, T0 + 9.6)), AllTime(), pad=PAD)
    clock.advance(16 + PAD)
    b = sp.poll()
    assert b.strides == [(T0 + k, T0 + k + 4) for k in (0, 4, 8, 12)]
    # the chunk read for stride [8, 12) is [9, 13): outputs within PAD of it are invalid
    assert b.segs == segmentlist([segment(T0, T0 + 8), segment(T0 + 14, T0 + 16)])
    assert [(g.start, g.end) for g in b.gaps] == [(T0 + 8, T0 + 14)]
    assert "no data" in b.gaps[0].reason


def test_max_iter_skips_ahead_and_reports_the_gap(model: SyntheticModel) -> None:
    clock = ManualClock(T0)
    cm = CadenceManager(T0, 4, delay=PAD, clock=clock, max_lag_strides=5)
    sp = StreamProcessor(cm, FunctionSource(model.generate), AllTime(), pad=PAD)
    clock.advance(4 * 20 + PAD)
    b = sp.poll()
    assert b.strides == [(T0 + 76, T0 + 80)]
    assert [(g.start, g.end, g.reason.startswith("behind")) for g in b.gaps] == [
        (T0, T0 + 76, True)
    ]
    assert b.segs == segmentlist([segment(T0 + 76, T0 + 80)])
    # after the skip the history was re-read: the pad on the left is there
    assert b.umbrella.start == T0 + 76 - PAD


class DownSegments:
    def __init__(self) -> None:
        self.calls = 0

    def query(self, start: float, end: float) -> segmentlist:
        self.calls += 1
        raise SegmentQueryError("server down")


def test_segment_failure_is_a_gap_not_a_crash(model: SyntheticModel) -> None:
    clock = ManualClock(T0)
    cm = CadenceManager(T0, 4, delay=PAD, clock=clock)
    segs = DownSegments()
    sp = StreamProcessor(cm, FunctionSource(model.generate), segs, pad=PAD)
    clock.advance(8 + PAD)
    b = sp.poll()
    assert len(b.strides) == 2 and b.livetime == 0
    assert b.gaps and all("segments unavailable" in g.reason for g in b.gaps)
    assert sum(g.duration for g in b.gaps) == 8
    assert segs.calls == 1  # one query per buffer, not one per stride


def test_live_poll_returns_the_strides_due_when_it_started(model: SyntheticModel) -> None:
    """Found by the chaos run's live scenario: each stride's fetch took about a stride
    (data arriving in real time), so every stride that became due meanwhile joined the
    same poll, and the live stage wrote nothing until max_strides strides were in."""
    clock = ManualClock(T0)

    def slow_fetch(start: float, end: float) -> TriggerSet:
        clock.advance(1.0)  # as long as a stride: the next one is due when this returns
        return model.generate(start, end)

    cm = CadenceManager(T0, 1, delay=PAD, clock=clock)
    sp = StreamProcessor(cm, FunctionSource(slow_fetch), AllTime(), pad=PAD, max_strides=50)
    clock.advance(2 + PAD)
    b = sp.poll()
    assert b.strides == [(T0, T0 + 1), (T0 + 1, T0 + 2)]  # before: 50 strides
    assert sp.poll().strides[0] == (T0 + 2, T0 + 3)  # the next poll goes on from there


def test_max_rows_bounds_a_poll_without_changing_the_features(model: SyntheticModel) -> None:
    """A poll stops adding strides once it read ``max_rows`` rows (memory follows rows,
    not seconds: 64 s at 3,000 channels is ~3 M rows); the strides and their features
    are those of unbounded polls."""
    spec = spec_of(model)

    def run(max_rows: int | None) -> tuple[list[int], np.ndarray]:
        clock = ManualClock(T0 + SPAN + PAD)  # every stride due: one poll if unbounded
        cm = CadenceManager(T0, 1, delay=PAD, clock=clock, max_timestamp=T0 + SPAN)
        sp = StreamProcessor(
            cm, FunctionSource(model.generate), AllTime(), pad=PAD, max_rows=max_rows
        )
        sizes, feats = [], []
        while not cm.finished:
            batch = sp.poll()
            sizes.append(len(batch.strides))
            trig = batch.umbrella.triggers()
            for s, e in batch.strides:
                feats.append(feature_matrix(trig, grid_times(s, e, RATE), spec))
            sp.flush()
        return sizes, np.concatenate(feats)

    whole, f_whole = run(None)
    per_second = len(model.generate(T0, T0 + SPAN)) / SPAN
    bounded, f_bounded = run(int(4 * per_second))
    assert whole == [SPAN]
    assert len(bounded) >= SPAN / 6 and max(bounded) <= 6  # ~4-5 strides of rows per poll
    assert sum(bounded) == SPAN
    assert np.array_equal(f_whole, f_bounded)
