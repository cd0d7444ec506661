"""TriggerSet: construction, concat (channel tables merged), selection, per-channel views."""

from __future__ import annotations

import numpy as np
import pytest
from igwn_segments import segment, segmentlist

from idq_common.data.triggers import TriggerSet, in_segments


def _set(names, rows):
    chan, t, s, f = zip(*rows, strict=True) if rows else ((), (), (), ())
    return TriggerSet(tuple(names), np.array(chan), np.array(t), np.array(s), np.array(f))


def test_empty_and_len():
    e = TriggerSet.empty(("A", "B"))
    assert len(e) == 0
    assert e.channels == ("A", "B")
    assert e.for_channel("A")[0].size == 0
    assert e.for_channel("missing")[0].size == 0


def test_validation():
    with pytest.raises(ValueError):
        TriggerSet(("A",), np.array([1]), np.array([0.0]), np.array([6.0]), np.array([10.0]))
    with pytest.raises(ValueError):
        TriggerSet(("A",), np.array([0, 0]), np.array([0.0]), np.array([6.0]), np.array([1.0]))
    with pytest.raises(ValueError):
        TriggerSet.empty(("A", "A"))


def test_concat_merges_tables_by_name_in_time_order():
    a = _set(("A", "B"), [(0, 1.0, 6.0, 10.0), (1, 3.0, 7.0, 20.0)])
    b = _set(("C", "A"), [(0, 2.0, 8.0, 30.0), (1, 0.5, 9.0, 40.0)])
    c = TriggerSet.concat([a, b])
    assert c.channels == ("A", "B", "C")
    assert c.time.tolist() == [0.5, 1.0, 2.0, 3.0]
    assert [c.channels[i] for i in c.channel] == ["A", "A", "C", "B"]
    assert c.snr.tolist() == [9.0, 6.0, 8.0, 7.0]
    t, s, _ = c.for_channel("A")
    assert t.tolist() == [0.5, 1.0] and s.tolist() == [9.0, 6.0]
    assert len(TriggerSet.concat([])) == 0


def test_concat_is_stable_for_equal_times():
    a = _set(("A",), [(0, 1.0, 6.0, 1.0)])
    b = _set(("B",), [(0, 1.0, 7.0, 2.0)])
    c = TriggerSet.concat([a, b])
    assert [c.channels[i] for i in c.channel] == ["A", "B"]


def test_concat_of_one_channel_table_equals_the_merge() -> None:
    """Batches sharing a channel table (the stream's case) skip the merge and, when in
    time order, the sort: the same set as through the merging path, ties included."""
    rng = np.random.default_rng(3)
    names = ("A", "B", "C")

    def batch(t0: float) -> TriggerSet:
        t = np.sort(t0 + rng.integers(0, 8, 20) / 8.0)  # equal times across channels
        return TriggerSet(names, rng.integers(0, 3, 20), t, rng.random(20), rng.random(20))

    in_order = [batch(0.0), batch(1.0), batch(2.0)]
    shuffled = [in_order[2], in_order[0], in_order[1]]
    for sets in (in_order, shuffled):
        got = TriggerSet.concat(sets)
        # the same rows through the merging path: a table with another name order
        other = ("C", "A", "B")
        remapped = [s.take(np.arange(len(s))) for s in sets]
        relabeled = [
            TriggerSet(
                other,
                np.array([other.index(names[c]) for c in s.channel]),
                s.time,
                s.snr,
                s.frequency,
            )
            for s in remapped
        ]
        want = TriggerSet.concat([TriggerSet.empty(names), *relabeled])
        assert got.channels == want.channels == names
        for col in ("channel", "time", "snr", "frequency"):
            np.testing.assert_array_equal(getattr(got, col), getattr(want, col))


def test_select_time_half_open_and_restrict():
    s = TriggerSet.from_channels({"A": ([0.0, 1.0, 2.0, 3.0], [6] * 4, [1] * 4)})
    assert s.select_time(1.0, 3.0).time.tolist() == [1.0, 2.0]
    segs = segmentlist([segment(0.0, 1.0), segment(2.5, 3.0), segment(2.0, 2.6)])
    assert s.restrict(segs).time.tolist() == [0.0, 2.0]
    assert s.select_channels(["B"]).time.size == 0


def test_for_channel_sorted_regardless_of_row_order():
    rng = np.random.default_rng(1)
    t = rng.uniform(0, 10, 200)
    ch = rng.integers(0, 3, 200)
    s = TriggerSet(("A", "B", "C"), ch, t, rng.uniform(6, 9, 200), rng.uniform(1, 9, 200))
    perm = rng.permutation(200)
    s2 = s.take(perm)
    for name in s.channels:
        a, b = s.for_channel(name), s2.for_channel(name)
        assert np.all(np.diff(a[0]) >= 0)
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
    assert sum(s.counts().values()) == 200


@pytest.mark.parametrize("n_segs", [1, 2, 4, 5, 9])
def test_in_segments_few_and_many_segments_agree_with_a_search(n_segs: int) -> None:
    """A few segments are compared one by one, more searched: the same half-open mask."""
    rng = np.random.default_rng(n_segs)
    t = rng.uniform(0, 100, 5000)
    t[:4] = [np.nan, np.inf, -np.inf, 0.0]
    edges = np.sort(rng.choice(np.arange(0.0, 101.0, 0.5), 2 * n_segs, replace=False))
    t[4 : 4 + edges.size] = edges  # every edge itself: starts in, ends out
    segs = segmentlist(segment(a, b) for a, b in edges.reshape(-1, 2))
    idx = np.searchsorted(edges[::2], t, side="right") - 1
    want = (idx >= 0) & (t < edges[1::2][np.maximum(idx, 0)])
    np.testing.assert_array_equal(in_segments(t, segs), want)


def test_in_segments_edges():
    segs = segmentlist([segment(1.0, 2.0)])
    assert in_segments(np.array([0.5, 1.0, 1.5, 2.0]), segs).tolist() == [False, True, True, False]
    assert in_segments(np.array([1.0]), segmentlist()).tolist() == [False]


def _tied_set(seed: int, n: int, sort_by_time: bool) -> TriggerSet:
    # Coarse values: many rows of one channel share a time, and often snr too.
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 12, n) / 4.0
    if sort_by_time:
        t = np.sort(t)
    ch = rng.integers(0, 4, n)
    s = rng.integers(0, 3, n).astype(float)
    f = rng.integers(0, 3, n).astype(float)
    return TriggerSet(("A", "B", "C", "D", "E"), ch, t, s, f)  # E never fires


@pytest.mark.parametrize("seed", range(6))
def test_grouped_equals_four_key_lexsort(seed):
    s = _tied_set(seed, 300, sort_by_time=bool(seed % 2))
    order = np.lexsort((s.frequency, s.snr, s.time, s.channel))
    bounds, t, snr, f = s.grouped
    np.testing.assert_array_equal(t, s.time[order])
    np.testing.assert_array_equal(snr, s.snr[order])
    np.testing.assert_array_equal(f, s.frequency[order])
    assert bounds.tolist() == np.searchsorted(s.channel[order], np.arange(6)).tolist()
    ch, tt, _, _ = s.time_sorted
    assert np.all(np.diff(tt) >= 0) and sorted(ch.tolist()) == sorted(s.channel.tolist())


@pytest.mark.parametrize("seed", range(4))
def test_single_channel_path_equals_grouped_path(seed):
    a = _tied_set(seed, 200, sort_by_time=bool(seed % 2))
    b = a.take(np.arange(len(a)))  # same rows, fresh caches
    first = {name: a.for_channel(name) for name in ("C", "E", "missing")}  # one-channel path
    assert "grouped" not in a.__dict__
    _ = b.grouped
    for name, got in first.items():
        for x, y in zip(got, b.for_channel(name), strict=True):
            np.testing.assert_array_equal(x, y)
    # once grouped, the set answers from the grouping; still the same arrays
    _ = a.grouped
    for x, y in zip(first["C"], a.for_channel("C"), strict=True):
        np.testing.assert_array_equal(x, y)


# -- the sorted fast paths give the mask paths' rows ------------------------------
def _rows(ts: TriggerSet) -> list[tuple[str, float, float, float]]:
    return [
        (ts.channels[c], t, s, f)
        for c, t, s, f in zip(
            ts.channel.tolist(),
            ts.time.tolist(),
            ts.snr.tolist(),
            ts.frequency.tolist(),
            strict=True,
        )
    ]


def _random_set(rng: np.random.Generator, n: int, sort: bool, nan: bool = False) -> TriggerSet:
    t = np.round(rng.uniform(0, 10, n), 1)  # ties on purpose
    if sort:
        t = np.sort(t)
    if nan and n:
        t[rng.integers(n)] = np.nan
    return TriggerSet(("a", "b", "c"), rng.integers(0, 3, n), t, rng.random(n), rng.random(n) * 100)


def _by_mask(ts: TriggerSet, mask: np.ndarray) -> list[tuple[str, float, float, float]]:
    return [r for r, keep in zip(_rows(ts), mask.tolist(), strict=True) if keep]


@pytest.mark.parametrize("seed", range(12))
def test_sorted_cuts_equal_the_masks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for sort, nan in ((True, False), (False, False), (True, True)):
        ts = _random_set(rng, int(rng.integers(0, 60)), sort, nan)
        assert ts.is_time_sorted == (sort and not nan) or len(ts) < 2
        for start, end in ((2.0, 5.0), (-1.0, 20.0), (5.0, 2.0), (3.3, 3.3), (0.0, np.inf)):
            got = ts.select_time(start, end)
            assert _rows(got) == _by_mask(ts, (ts.time >= start) & (ts.time < end))
            assert got.channels is ts.channels
        for segs in (
            segmentlist([segment(1, 2), segment(4, 6.5), segment(8, 9)]),
            segmentlist([segment(0, 10)]),
            segmentlist([segment(2.5, 3)]),
            segmentlist(),
            segmentlist([segment(3, 5), segment(4, 7)]),  # overlapping: coalesced
        ):
            assert _rows(ts.restrict(segs)) == _by_mask(ts, in_segments(ts.time, segs))
        if len(ts):
            assert ts.select_time(-1.0, 20.0) is ts or nan


def test_slices_are_views_and_keep_the_order_flag() -> None:
    rng = np.random.default_rng(5)
    ts = _random_set(rng, 100, sort=True)
    cut = ts.select_time(2.0, 6.0)
    assert np.shares_memory(cut.time, ts.time) and cut.is_time_sorted
    assert ts.slice_rows(0, len(ts)) is ts
    assert len(ts.slice_rows(50, 10)) == 0 and len(ts.slice_rows(-5, 1000)) == len(ts)
    # a mask keeps order; positions are not assumed to
    assert ts.take(ts.snr > 0.5).__dict__.get("is_time_sorted") is True
    assert "is_time_sorted" not in ts.take(np.arange(10)[::-1]).__dict__


@pytest.mark.parametrize("seed", range(8))
def test_concat_within_equals_concat_then_cut(seed: int) -> None:
    rng = np.random.default_rng(seed)
    tables = (("a", "b", "c"), ("c", "d"))
    for k in (1, 2, 4):
        sets = []
        for i in range(k):
            ts = _random_set(rng, int(rng.integers(0, 30)), sort=bool(rng.integers(2)))
            names = tables[i % 2] if rng.integers(2) else tables[0]
            sets.append(TriggerSet(names, ts.channel % len(names), ts.time, ts.snr, ts.frequency))
        for start, end in ((2.0, 7.0), (-1.0, 11.0)):
            want = TriggerSet.concat(sets).select_time(start, end)
            got = TriggerSet.concat_within(sets, start, end)
            assert got.channels == want.channels
            assert _rows(got) == _rows(want)


def test_concat_of_ordered_sets_skips_the_check_but_not_the_sort() -> None:
    a = TriggerSet(("x",), [0, 0], [1.0, 2.0], [1.0, 1.0], [1.0, 1.0])
    b = TriggerSet(("x",), [0, 0], [2.0, 3.0], [2.0, 2.0], [2.0, 2.0])
    assert a.is_time_sorted and b.is_time_sorted
    assert TriggerSet.concat([a, b]).time.tolist() == [1.0, 2.0, 2.0, 3.0]
    # sets in order each, but overlapping in time: still sorted (stably)
    got = TriggerSet.concat([b, a])
    assert got.time.tolist() == [1.0, 2.0, 2.0, 3.0] and got.snr.tolist() == [1.0, 2.0, 1.0, 2.0]


def test_a_checked_table_is_not_checked_again_but_a_new_one_is() -> None:
    with pytest.raises(ValueError, match="unique"):
        TriggerSet(("a", "a"), [0], [1.0], [1.0], [1.0])
    ts = TriggerSet(("a", "b"), [0, 1], [1.0, 2.0], [1.0, 1.0], [1.0, 1.0])
    assert len(ts.take(np.array([True, False]))) == 1
    with pytest.raises(ValueError, match="range"):
        TriggerSet(ts.channels, [0, -1], [1.0, 2.0], [1.0, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="range"):
        TriggerSet(ts.channels, [0, 2], [1.0, 2.0], [1.0, 1.0], [1.0, 1.0])
