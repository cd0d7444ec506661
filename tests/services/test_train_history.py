"""Train's training set: pruning cuts the span, skipped incremental classifiers keep
their samples, and the whole set round-trips through bytes (it survives restarts)."""

from __future__ import annotations

import math

import numpy as np
from igwn_segments import segment, segmentlist

from idq_common.science.quiver import Quiver
from idq_train.history import TrainingSet


def _stride(start: float, end: float, labels: list[int]) -> Quiver:
    n = len(labels)
    t = np.linspace(start, end, n, endpoint=False)
    feats = np.column_stack([t, t * 2])
    return Quiver(t, labels, feats, ("a", "b"), start, end, [segment(start, end)])


def test_pruned_set_announces_the_span_of_the_samples_it_keeps():
    ts = TrainingSet([], max_samples=10_000, max_span=100.0)
    for k in range(5):
        ts.add(_stride(64.0 * k, 64.0 * (k + 1), [1, 0, 0, 0]))
    q = ts.data_for("forest", incremental=False)
    # before: the span stayed [0, 320) and OVL's livetime 320 s for 100 s of samples
    assert (q.start, q.end) == (220.0, 320.0)
    assert math.isclose(q.livetime, 100.0)
    assert q.times.min() >= 220.0


def test_skipped_incremental_classifier_keeps_its_unseen_samples():
    ts = TrainingSet(["sgd"], max_samples=10_000, max_span=1e6)
    ts.add(_stride(0.0, 16.0, [0, 0, 0, 0]))  # no glitch: sgd cannot train
    assert ts.data_for("sgd", incremental=True).n_glitch == 0
    ts.round_done()  # the round skipped sgd: its samples stay
    ts.add(_stride(16.0, 32.0, [1, 0, 1, 0]))
    data = ts.data_for("sgd", incremental=True)
    # before: only the second stride's 4 samples (the first four were dropped)
    assert len(data) == 8 and (data.start, data.end) == (0.0, 32.0)
    ts.trained("sgd")
    ts.round_done()
    ts.add(_stride(32.0, 48.0, [1, 0]))
    assert len(ts.data_for("sgd", incremental=True)) == 2
    assert len(ts.data_for("forest", incremental=False)) == 10


def test_round_trip_through_bytes_and_cut_before_restart_point():
    ts = TrainingSet(["sgd"], max_samples=10_000, max_span=1e6)
    ts.add(_stride(0.0, 16.0, [1, 0, 0, 0]))
    ts.add(_stride(16.0, 32.0, [1, 0, 1, 0]))
    back = TrainingSet(["sgd", "other"], 10_000, 1e6)
    back.restore(ts.to_bytes())
    a, b = ts.data_for("forest", False), back.data_for("forest", False)
    assert np.array_equal(a.times, b.times) and np.array_equal(a.features, b.features)
    assert np.array_equal(a.labels, b.labels) and a.columns == b.columns
    assert (b.start, b.end) == (0.0, 32.0) and b.segs == segmentlist([segment(0, 32)])
    assert len(back.data_for("sgd", True)) == 8 and "other" not in back.unseen
    back.before(16.0)
    assert back.data_for("forest", False).end == 16.0 and len(back) == 4


def test_joining_when_read_equals_pruning_after_every_stride():
    """The set keeps stride quivers as parts and joins/prunes them when read; the
    newest-samples cut only moves forward, so that is the quiver of pruning after every
    stride (the earlier code, which copied the whole kept set per stride)."""
    rng = np.random.default_rng(5)
    for max_samples, max_span in [(7, 1e6), (10_000, 40.0), (12, 50.0), (3, 9.0)]:
        ts = TrainingSet(["sgd"], max_samples, max_span)
        ref: Quiver | None = None
        t = 0.0
        for k in range(40):
            n = int(rng.integers(0, 5))
            length = float(rng.choice([1.0, 4.0]))
            times = np.sort(rng.uniform(t, t + length, n))
            times[1:][rng.random(max(n - 1, 0)) < 0.2] = times[0] if n else 0.0  # ties
            times.sort()
            q = Quiver(
                times,
                rng.integers(0, 2, n),
                rng.normal(size=(n, 2)),
                ("a", "b"),
                t,
                t + length,
                [segment(t, t + length)],
            )
            ts.add(q)
            ref = (q if ref is None else Quiver.concat([ref, q])).newest(max_samples, max_span)
            t += length
            assert len(ts) == len(ref)  # counted from the parts' times, not joined
            if k % 7 == 3:  # read now and then (a round, a log line, a commit)
                got = ts.data_for("forest", incremental=False)
                assert np.array_equal(got.times, ref.times)
            if k % 11 == 5:
                ts.trained("sgd")
        got = ts.data_for("forest", incremental=False)
        assert ref is not None and len(ts) == len(ref)
        assert np.array_equal(got.times, ref.times) and np.array_equal(got.labels, ref.labels)
        assert np.array_equal(got.features, ref.features)
        assert (got.start, got.end) == (ref.start, ref.end) and got.segs == ref.segs
