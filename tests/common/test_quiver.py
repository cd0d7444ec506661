"""Quiver setters, concat/select/trim, and build_quiver; efficiency_at_fap."""

from __future__ import annotations

import math

import numpy as np
import pytest
from igwn_segments import segment, segmentlist

from idq_common.data.synthetic import SyntheticSource
from idq_common.data.umbrella import Umbrella
from idq_common.science.merit import efficiency_at_fap
from idq_common.science.quiver import Quiver, build_quiver
from idq_dev.testing.synthetic import (
    DIRTY_BOUNDS,
    SPAN,
    TARGET_BOUNDS,
    small_model,
    small_quiver,
    small_spec,
)


def _q(start=0.0, end=10.0, segs=None, n=4):
    t = np.linspace(start, end, n, endpoint=False)
    return Quiver(t, np.arange(n) % 2, np.ones((n, 2)), ("a", "b"), start, end, segs)


def test_setters_keep_segs_inside_span():
    q = _q(segs=[segment(1, 3), segment(5, 9)])
    q.start = 2.0
    assert q.segs == segmentlist([segment(2, 3), segment(5, 9)])
    q.end = 6.0
    assert q.segs == segmentlist([segment(2, 3), segment(5, 6)])
    q.segs = [segment(0, 100)]
    assert q.segs == segmentlist([segment(2, 6)])
    assert math.isclose(q.livetime, 4.0)
    with pytest.raises(ValueError):
        q.start = 7.0
    with pytest.raises(ValueError):
        q.end = 1.0


def test_validation_counts_select_trim():
    q = _q()
    assert (len(q), q.n_glitch, q.n_clean) == (4, 2, 2)
    with pytest.raises(ValueError):
        Quiver([1.0], [1, 0], np.ones((1, 0)), (), 0, 1)
    with pytest.raises(ValueError):
        Quiver([1.0], [1], np.ones((1, 2)), ("a",), 0, 1)
    s = q.select(q.labels == 1)
    assert s.n_clean == 0 and s.n_glitch == 2 and (s.start, s.end) == (0.0, 10.0)
    t = q.trim(2.0, 8.0)
    assert t.times.tolist() == [2.5, 5.0, 7.5] and t.segs == segmentlist([segment(2, 8)])


def test_concat():
    a, b = _q(0, 10), _q(10, 20, n=2)
    b.ranks = np.array([0.1, 0.2])
    c = Quiver.concat([b, a])
    assert np.all(np.diff(c.times) >= 0) and len(c) == 6
    assert (c.start, c.end) == (0.0, 20.0) and c.segs == segmentlist([segment(0, 20)])
    assert c.ranks is None
    a.ranks = np.zeros(4)
    a.model_id = b.model_id = "m1"
    assert Quiver.concat([a, b]).model_id == "m1"
    with pytest.raises(ValueError):
        Quiver.concat([a, Quiver([], [], np.zeros((0, 1)), ("z",), 0, 1)])


def test_build_quiver_labels_and_features():
    m = small_model()
    q = small_quiver(m)
    truth = m.truth(*SPAN)
    np.testing.assert_array_equal(q.times[q.labels == 1], np.sort(truth.time[truth.snr >= 10]))
    assert q.n_clean > 50 and q.columns == small_spec(m).names
    assert np.all(np.diff(q.times) >= 0)
    # The strong witness fires on most glitches and rarely on clean samples.
    snr0 = q.features[:, 0]
    assert (snr0[q.labels == 1] > 0).mean() > 0.6 > 0.4 > (snr0[q.labels == 0] > 0).mean()
    with pytest.raises(ValueError):
        build_quiver(
            SyntheticSource(m, *SPAN),
            m.target_channel,
            TARGET_BOUNDS,
            0.2,
            DIRTY_BOUNDS,
            0.5,
            1,
            small_spec(m).__class__((m.target_channel,), 0.25),
        )


def test_build_quiver_stride_by_stride_equals_one_batch():
    m = small_model()
    spec = small_spec(m)
    start, end, pad = SPAN[0], SPAN[0] + 128, 2.0
    args = (m.target_channel, TARGET_BOUNDS, 0.5, DIRTY_BOUNDS, 0.5, 3, spec)
    whole = build_quiver(
        SyntheticSource(m, start - pad, end + pad), *args, segs=[segment(start, end)]
    )
    parts = []
    for lo in np.arange(start, end, 16.0):
        u = Umbrella([SyntheticSource(m, lo - pad, lo + 16 + pad)])
        parts.append(build_quiver(u, *args, segs=[segment(lo, lo + 16)]))
    glued = Quiver.concat(parts)
    np.testing.assert_array_equal(whole.times, glued.times)
    np.testing.assert_array_equal(whole.labels, glued.labels)
    np.testing.assert_array_equal(whole.features, glued.features)
    assert glued.segs == whole.segs == segmentlist([segment(start, end)])


def test_build_quiver_max_samples():
    m = small_model()
    q = build_quiver(
        SyntheticSource(m, *SPAN),
        m.target_channel,
        TARGET_BOUNDS,
        1.0,
        DIRTY_BOUNDS,
        0.5,
        1,
        small_spec(m),
        max_samples=40,
        rng_seed=5,
    )
    assert len(q) == 40 and np.all(np.diff(q.times) >= 0)


def test_efficiency_at_fap():
    clean = np.arange(100.0)  # FAP 0.1 -> threshold 89: scores > 89 flagged
    glitch = np.array([50.0, 89.0, 89.5, 95.0, 120.0])
    np.testing.assert_allclose(efficiency_at_fap(glitch, clean, (0.0, 0.1, 1.0)), [0.2, 0.6, 1.0])
    assert efficiency_at_fap(glitch, clean, (0.01,))[0] == pytest.approx(0.2)
    with pytest.raises(ValueError):
        efficiency_at_fap([], clean)
    with pytest.raises(ValueError):
        efficiency_at_fap(glitch, clean, (1.5,))


def test_newest_cuts_span_and_segments_with_the_samples():
    # train prunes with this: before, select() kept the old span and segments, so the
    # announced start and OVL's livetime described samples no longer there
    q = _q(0.0, 100.0, segs=[segment(0, 30), segment(40, 100)], n=100)
    by_span = q.newest(max_span=50.0)
    assert (by_span.start, by_span.end) == (50.0, 100.0)
    assert by_span.times.min() >= 50.0 and len(by_span) == 50
    assert math.isclose(by_span.livetime, 50.0)
    by_count = q.newest(max_samples=20, max_span=50.0)
    assert len(by_count) == 20 and by_count.times.min() == 80.0
    assert by_count.start > 79.0 and by_count.start <= 80.0
    assert math.isclose(by_count.livetime, 100.0 - by_count.start)
    assert q.newest(max_samples=1000, max_span=1000.0) is q


def test_newest_keeps_ties_together():
    t = np.array([1.0, 2.0, 2.0, 3.0])
    q = Quiver(t, [1, 0, 1, 0], np.ones((4, 1)), ("a",), 0.0, 4.0)
    kept = q.newest(max_samples=2)
    assert list(kept.times) == [3.0] and kept.start > 2.0
