"""ClassifierData: segments, target times and chunk-invariant random times."""

from __future__ import annotations

import math

import numpy as np
from igwn_segments import segment, segmentlist

from idq_common.data.base import InMemoryData
from idq_common.data.synthetic import SyntheticSource
from idq_dev.testing.synthetic import DIRTY_BOUNDS, TARGET_BOUNDS, small_model

T0 = 1_400_000_000.0


def _source():
    return SyntheticSource(small_model(), T0, T0 + 400)


def test_triggers_inside_span_and_segs_and_restrict_drops_cache():
    segs = segmentlist([segment(T0 + 10, T0 + 100), segment(T0 + 200, T0 + 390)])
    d = SyntheticSource(small_model(), T0, T0 + 400, segs)
    t = d.triggers().time
    assert t.size and np.all(((t >= T0 + 10) & (t < T0 + 100)) | ((t >= T0 + 200) & (t < T0 + 390)))
    d.restrict_segments(segmentlist([segment(T0 + 50, T0 + 250)]))
    assert d.segs == segmentlist([segment(T0 + 50, T0 + 100), segment(T0 + 200, T0 + 250)])
    t2 = d.triggers().time
    assert t2.size < t.size and t2.min() >= T0 + 50 and t2.max() < T0 + 250
    assert math.isclose(d.livetime, 100.0)


def test_target_times_bounds_inclusive_low_exclusive_high():
    m = small_model()
    d = _source()
    truth = m.truth(T0, T0 + 400)
    got = d.target_times(m.target_channel, {"snr": (10.0, math.inf)})
    np.testing.assert_array_equal(got, np.sort(truth.time[truth.snr >= 10]))
    assert np.all(np.diff(got) > 0)
    some = d.triggers().for_channel(m.target_channel)[1][0]
    exact = d.target_times(m.target_channel, {"snr": (some, some + 1e-9)})
    assert exact.size == 1
    assert d.target_times(m.target_channel, {"snr": (0, some)}).size < got.size + 1000


def test_random_times_deterministic_rate_and_clean():
    m = small_model()
    d = _source()
    a = d.random_times(0.5, m.target_channel, DIRTY_BOUNDS, 0.5, seed=3)
    b = _source().random_times(0.5, m.target_channel, DIRTY_BOUNDS, 0.5, seed=3)
    np.testing.assert_array_equal(a, b)
    c = d.random_times(0.5, m.target_channel, DIRTY_BOUNDS, 0.5, seed=4)
    assert not np.array_equal(a, c)
    assert np.all(np.diff(a) > 0) and a.min() >= T0 and a.max() < T0 + 400
    glitches = m.truth(T0 - 1, T0 + 401).time
    assert np.abs(a[:, None] - glitches[None, :]).min() > 0.5
    # Livetime left after excluding +-0.5 s around 0.2 Hz glitches is about 80%.
    assert 0.5 * 400 * 0.8 * 0.7 < a.size < 0.5 * 400 * 0.8 * 1.3


def test_random_times_chunk_invariant():
    # No dirt: the draw itself must not depend on how the span is cut.
    trig = small_model().generate(T0, T0 + 300)
    whole = InMemoryData(trig, T0, T0 + 300).random_times(2.0, "none", None, 0.5, seed=9)
    for cut in (T0 + 100, T0 + 100.37, T0 + 250.5):
        left = InMemoryData(trig, T0, cut).random_times(2.0, "none", None, 0.5, seed=9)
        right = InMemoryData(trig, cut, T0 + 300).random_times(2.0, "none", None, 0.5, seed=9)
        np.testing.assert_array_equal(whole, np.concatenate([left, right]))


def test_random_times_chunk_invariant_with_padding_and_segs():
    # With dirt, a padded source restricted by segs equals the one-piece answer.
    m = small_model()
    whole = SyntheticSource(m, T0, T0 + 300).random_times(
        1.0, m.target_channel, DIRTY_BOUNDS, 0.5, seed=2
    )
    pieces = []
    for lo, hi in ((T0, T0 + 111), (T0 + 111, T0 + 300)):
        src = SyntheticSource(m, lo - 2, hi + 2)
        pieces.append(
            src.random_times(
                1.0, m.target_channel, DIRTY_BOUNDS, 0.5, seed=2, segs=[segment(lo, hi)]
            )
        )
    np.testing.assert_array_equal(whole, np.concatenate(pieces))


def test_random_times_only_inside_segments():
    trig = small_model().generate(T0, T0 + 100)
    segs = segmentlist([segment(T0 + 10.5, T0 + 20.25), segment(T0 + 60, T0 + 61)])
    d = InMemoryData(trig, T0, T0 + 100, segs)
    r = d.random_times(20.0, "none", TARGET_BOUNDS, 0.5, seed=1)
    full = InMemoryData(trig, T0, T0 + 100).random_times(20.0, "none", None, 0.5, seed=1)
    inside = ((full >= T0 + 10.5) & (full < T0 + 20.25)) | ((full >= T0 + 60) & (full < T0 + 61))
    np.testing.assert_array_equal(r, full[inside])
    assert d.random_times(0.0, "none", None, 0.5, seed=1).size == 0
