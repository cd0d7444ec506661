"""Umbrella: each method of the seed's UmbrellaClassifierData API."""

from __future__ import annotations

import numpy as np
import pytest
from igwn_segments import segment, segmentlist

from idq_common.data.base import InMemoryData
from idq_common.data.synthetic import SyntheticSource
from idq_common.data.triggers import TriggerSet
from idq_common.data.umbrella import Umbrella
from idq_dev.testing.synthetic import small_model

T0 = 1_400_000_000.0


def _chunks(n=4, stride=32.0):
    m = small_model()
    return m, [SyntheticSource(m, T0 + i * stride, T0 + (i + 1) * stride) for i in range(n)]


def _eq(a: TriggerSet, b: TriggerSet) -> None:
    for k in ("time", "snr", "frequency"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    assert [a.channels[i] for i in a.channel] == [b.channels[i] for i in b.channel]


def test_children_span_and_triggers_equal_one_piece():
    m, kids = _chunks()
    u = Umbrella(kids)
    assert len(u) == 4 and u.children == tuple(kids)
    assert (u.start, u.end) == (T0, T0 + 128)
    assert u.segs == segmentlist([segment(T0, T0 + 128)])
    _eq(u.triggers(), m.generate(T0, T0 + 128))
    assert set(u.all_channels) == set(m.channels)
    assert u.columns == ("time", "snr", "frequency") == u.all_columns


def test_extend_child_bumps_end_and_segs_and_invalidates_cache():
    _m, kids = _chunks()
    u = Umbrella()
    u.extend_child(kids[0])
    n0 = len(u.triggers())
    u.extend_children(kids[1:])
    assert (u.start, u.end) == (T0, T0 + 128)
    assert len(u.triggers()) > n0
    with pytest.raises(ValueError):
        u.extend_child(kids[0])


def test_strip_child_drops_oldest_and_shrinks():
    m, kids = _chunks()
    u = Umbrella(kids)
    old = u.strip_child()
    assert old is kids[0]
    assert u.start == T0 + 32 and u.segs == segmentlist([segment(T0 + 32, T0 + 128)])
    _eq(u.triggers(), m.generate(T0 + 32, T0 + 128))
    for _ in range(3):
        u.strip_child()
    assert len(u) == 0 and abs(u.segs) == 0 and len(u.triggers()) == 0
    with pytest.raises(IndexError):
        u.strip_child()


def test_append_and_appendleft_children():
    m, kids = _chunks()
    u = Umbrella(kids[1:3])
    u.appendleft_children(kids[0])
    u.append_children(kids[3])
    assert u.children == tuple(kids)
    assert (u.start, u.end) == (T0, T0 + 128)
    _eq(u.triggers(), m.generate(T0, T0 + 128))


def test_restrict_segments_reaches_children():
    m, kids = _chunks()
    u = Umbrella(kids)
    cut = segmentlist([segment(T0 + 20, T0 + 40), segment(T0 + 100, T0 + 110)])
    u.restrict_segments(cut)
    assert u.segs == cut
    assert kids[0].segs == segmentlist([segment(T0 + 20, T0 + 32)])
    assert abs(kids[2].segs) == 0
    _eq(u.triggers(), m.generate(T0, T0 + 128).restrict(cut))


def test_segments_gaps_between_children_and_mixed_channels():
    a = InMemoryData(TriggerSet.from_channels({"A": ([1.0], [6.0], [10.0])}), 0, 10)
    b = InMemoryData(TriggerSet.from_channels({"B": ([21.0], [7.0], [20.0])}), 20, 30)
    u = Umbrella([a, b])
    assert u.segs == segmentlist([segment(0, 10), segment(20, 30)])
    assert u.all_channels == ("A", "B")
    assert u.triggers().time.tolist() == [1.0, 21.0]
    assert u.target_times("B", {"snr": (6.5, 100)}).tolist() == [21.0]
