"""Columnar in-memory triggers: :class:`TriggerSet`.

One row per trigger, stored as parallel numpy columns, the same layout as the Avro
``feature_batch`` record. Every operation is vectorised: nothing here loops over rows in
Python, so sets of millions of rows (1,000 channels at a 16 Hz feature rate) stay cheap.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from igwn_segments import segmentlist

__all__ = ["ChannelTriggers", "TriggerSet", "group_rows", "in_segments"]

#: (time, snr, frequency) of one channel, sorted by time.
ChannelTriggers = tuple[np.ndarray, np.ndarray, np.ndarray]

#: channel tables already checked for unique names, by id (each held, so an id is never
#: reused while listed): a stream's batches share one table object (the Avro reader's
#: cache), and a set of 1,000 names per set built was ~20 us of every take and slice
_CHECKED_TABLES: dict[int, tuple[str, ...]] = {}
_CHECKED_MAX = 256


def _check_table(channels: tuple[str, ...]) -> None:
    if _CHECKED_TABLES.get(id(channels)) is channels:
        return
    if len(set(channels)) != len(channels):
        raise ValueError("TriggerSet channel names must be unique")
    if len(_CHECKED_TABLES) >= _CHECKED_MAX:
        _CHECKED_TABLES.clear()
    _CHECKED_TABLES[id(channels)] = channels


def in_segments(times: np.ndarray, segs: segmentlist) -> np.ndarray:
    """Boolean mask of ``times`` that fall inside ``segs`` (half-open ``[start, end)``).

    Parameters
    ----------
    times : numpy.ndarray
        GPS times, any order.
    segs : igwn_segments.segmentlist
        Segments; coalesced on a copy first so overlapping input is fine.

    Returns
    -------
    numpy.ndarray
        ``bool`` array, ``True`` where the time is inside a segment.
    """
    times = np.asarray(times, dtype=np.float64)
    segs = segmentlist(segs).coalesce()
    if len(segs) == 0 or times.size == 0:
        return np.zeros(times.shape, dtype=bool)
    if len(segs) <= 4:
        # a stream's stride has a segment or a few: comparisons per segment are ~5x
        # cheaper than the search below over 10^5-10^6 trigger times (same mask)
        out = np.zeros(times.shape, dtype=bool)
        for s in segs:
            out |= (times >= float(s[0])) & (times < float(s[1]))
        return out
    starts = np.array([float(s[0]) for s in segs])
    ends = np.array([float(s[1]) for s in segs])
    # Coalesced segments are sorted and disjoint: the candidate is the last one that
    # starts at or before t.
    idx = np.searchsorted(starts, times, side="right") - 1
    ok = idx >= 0
    out = np.zeros(times.shape, dtype=bool)
    out[ok] = times[ok] < ends[idx[ok]]
    return out


@dataclass(frozen=True)
class TriggerSet:
    """Triggers of many channels as parallel columns.

    Attributes
    ----------
    channels : tuple of str
        Channel names; ``channel[i]`` indexes this tuple.
    channel : numpy.ndarray
        ``int32`` channel index per row.
    time, snr, frequency : numpy.ndarray
        ``float64`` per row (GPS seconds, signal-to-noise ratio, Hz).

    Notes
    -----
    The arrays are coerced to their dtypes on construction and must not be mutated
    afterwards (per-channel views are cached).
    """

    channels: tuple[str, ...]
    channel: np.ndarray
    time: np.ndarray
    snr: np.ndarray
    frequency: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        object.__setattr__(self, "channel", np.ascontiguousarray(self.channel, dtype=np.int32))
        for name in ("time", "snr", "frequency"):
            object.__setattr__(
                self, name, np.ascontiguousarray(getattr(self, name), dtype=np.float64)
            )
        n = self.channel.shape[0]
        for name in ("channel", "time", "snr", "frequency"):
            arr = getattr(self, name)
            if arr.ndim != 1 or arr.shape[0] != n:
                raise ValueError(f"TriggerSet column {name!r} must be 1-D of length {n}")
        _check_table(self.channels)
        # one reduction: a negative index is a large unsigned one
        if n and int(self.channel.view(np.uint32).max()) >= len(self.channels):
            raise ValueError("TriggerSet channel index out of range of the channel table")

    # -- construction ---------------------------------------------------------------
    @classmethod
    def empty(cls, channels: Iterable[str] = ()) -> TriggerSet:
        """A set with no rows over the given channel table."""
        z = np.zeros(0)
        return cls(tuple(channels), np.zeros(0, dtype=np.int32), z, z, z)

    @classmethod
    def _trusted(
        cls,
        channels: tuple[str, ...],
        channel: np.ndarray,
        time: np.ndarray,
        snr: np.ndarray,
        frequency: np.ndarray,
        time_sorted: bool | None = None,
    ) -> TriggerSet:
        """A set from columns already valid (rows of valid sets: no checks, no copies).

        For the set's own operations only: ``channel`` int32 and the rest float64, all
        1-D contiguous of one length, indices within the (checked) table. The checks of
        the constructor cost more than a stride's slice itself. ``time_sorted``: known
        time order (None: found when first needed).
        """
        self = object.__new__(cls)
        object.__setattr__(self, "channels", channels)
        object.__setattr__(self, "channel", channel)
        object.__setattr__(self, "time", time)
        object.__setattr__(self, "snr", snr)
        object.__setattr__(self, "frequency", frequency)
        if time_sorted is not None:
            self.__dict__["is_time_sorted"] = time_sorted
        return self

    @classmethod
    def from_channels(
        cls, data: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float]]]
    ) -> TriggerSet:
        """Build from ``{name: (time, snr, frequency)}``; rows are sorted by time (stable)."""
        names = tuple(data)
        parts = [np.asarray(data[n][0], dtype=np.float64) for n in names]
        chan = np.concatenate(
            [np.full(p.shape[0], i, dtype=np.int32) for i, p in enumerate(parts)]
            or [np.zeros(0, dtype=np.int32)]
        )
        col = [
            np.concatenate(
                [np.asarray(data[n][j], dtype=np.float64) for n in names] or [np.zeros(0)]
            )
            for j in range(3)
        ]
        order = np.argsort(col[0], kind="stable")
        return cls(names, chan[order], col[0][order], col[1][order], col[2][order])

    @classmethod
    def concat(cls, sets: Iterable[TriggerSet]) -> TriggerSet:
        """Concatenate sets, merging their channel tables by name.

        The merged table lists names in order of first appearance. Rows are put in
        stable time order, so rows with equal times keep their input order.
        """
        sets = list(sets)
        if not sets:
            return cls.empty()
        table = sets[0].channels
        chans = []
        if all(s.channels is table or s.channels == table for s in sets):
            # one table (a source's batches, a stream's chunks): no remapping, a
            # Python loop over every name of every set saved (1,000 names x 60 sets)
            chans = [s.channel.astype(np.int32, copy=False) for s in sets]
        else:
            names: dict[str, int] = {}
            for s in sets:
                for n in s.channels:
                    names.setdefault(n, len(names))
            table = tuple(names)
            for s in sets:
                remap = np.array([names[n] for n in s.channels], dtype=np.int32)
                chans.append(remap[s.channel] if len(s.channels) else s.channel)
        time = np.concatenate([s.time for s in sets])
        cols: tuple[np.ndarray, ...] = (
            np.concatenate(chans),
            time,
            np.concatenate([s.snr for s in sets]),
            np.concatenate([s.frequency for s in sets]),
        )
        in_order = _in_order(sets) or bool(np.all(time[1:] >= time[:-1]))
        if not in_order:
            # a stable sort of sorted times is the identity: sets in time order (a
            # stream read in order) skip the sort and four gathers
            order = np.argsort(time, kind="stable")
            cols = tuple(c[order] for c in cols)
        # the columns are rows of valid sets over a checked (or freshly merged) table
        _check_table(table)
        ch, t, snr, f = cols
        return cls._trusted(table, ch, t, snr, f, time_sorted=True if in_order else None)

    @classmethod
    def concat_within(cls, sets: Sequence[TriggerSet], start: float, end: float) -> TriggerSet:
        """``concat(sets).select_time(start, end)``, cutting each set before concatenating.

        The same rows, order and table (the rows a time cut keeps of a stable time sort
        are the stable sort of the rows it keeps), but only the rows kept are copied,
        once, and one set in time order is cut into views, not copied.
        """
        cut = [s.select_time(start, end) for s in sets]
        if len(cut) == 1 and cut[0].is_time_sorted:
            return cut[0]
        return cls.concat(cut)

    # -- selection ------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.channel.shape[0])

    def take(self, index: np.ndarray) -> TriggerSet:
        """Rows at ``index`` (boolean mask or integer positions), same channel table."""
        index = np.asarray(index)
        cols = (
            self.channel[index],
            self.time[index],
            self.snr[index],
            self.frequency[index],
        )
        if cols[0].ndim != 1:
            raise ValueError("TriggerSet.take needs a 1-D index")
        # a mask keeps the rows' order: a sorted set stays sorted
        sorted_ = True if index.dtype == bool and self.__dict__.get("is_time_sorted") else None
        ch, t, snr, f = (np.ascontiguousarray(c) for c in cols)
        return TriggerSet._trusted(self.channels, ch, t, snr, f, time_sorted=sorted_)

    def slice_rows(self, lo: int, hi: int) -> TriggerSet:
        """Rows ``lo:hi`` (clipped to ``0 <= lo <= hi <= len``) as views of this set's
        columns: no copy (the set is immutable, sharing is safe); ``self`` for all rows."""
        n = len(self)
        lo = min(max(0, lo), n)
        hi = min(max(lo, hi), n)
        if lo == 0 and hi == n:
            return self
        sorted_ = True if self.__dict__.get("is_time_sorted") else None
        return TriggerSet._trusted(
            self.channels,
            self.channel[lo:hi],
            self.time[lo:hi],
            self.snr[lo:hi],
            self.frequency[lo:hi],
            time_sorted=sorted_,
        )

    @cached_property
    def is_time_sorted(self) -> bool:
        """Whether the rows are in time order (False with a NaN time). Cached."""
        t = self.time
        return bool(np.all(t[1:] >= t[:-1]))

    def select_time(self, start: float, end: float) -> TriggerSet:
        """Rows with ``start <= time < end`` (``self`` when that is every row).

        Rows in time order (a stream's) are cut by a binary search into views; the
        same rows as the mask, without the mask's pass and four gathers.
        """
        if self.is_time_sorted and start == start and end == end:  # not NaN
            lo, hi = np.searchsorted(self.time, [start, end], side="left")
            return self.slice_rows(int(lo), int(hi))
        return self._keep((self.time >= start) & (self.time < end))

    def restrict(self, segs: segmentlist) -> TriggerSet:
        """Rows whose time falls inside ``segs`` (half-open segments; ``self`` when all).

        Rows in time order are cut by a binary search per segment (the rows of
        coalesced segments are disjoint runs, in order): no pass over every row, and
        views when one run is kept.
        """
        if not self.is_time_sorted:
            return self._keep(in_segments(self.time, segs))
        segs = segmentlist(segs).coalesce()
        n = len(self)
        lo = np.searchsorted(self.time, [float(s[0]) for s in segs], side="left")
        hi = np.maximum(np.searchsorted(self.time, [float(s[1]) for s in segs], side="left"), lo)
        runs = [(int(a), int(b)) for a, b in zip(lo, hi, strict=True) if b > a]
        if not runs:
            return self.slice_rows(0, 0)
        if len(runs) == 1:
            return self.slice_rows(*runs[0])
        if sum(b - a for a, b in runs) == n:
            return self
        return self.take(np.concatenate([np.arange(a, b) for a, b in runs]))

    def _keep(self, mask: np.ndarray) -> TriggerSet:
        # the usual case of a stream (every row in segments, in span): no copy of the
        # columns (the set is immutable: sharing them is safe)
        return self if bool(mask.all()) else self.take(mask)

    def select_channels(self, names: Iterable[str]) -> TriggerSet:
        """Rows of the named channels only (unknown names are ignored); table unchanged."""
        wanted = {n for n in names}
        keep = np.array([n in wanted for n in self.channels], dtype=bool)
        if keep.size == 0:
            return self
        return self.take(keep[self.channel])

    # -- per-channel access ---------------------------------------------------------
    @cached_property
    def grouped(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Rows grouped by channel: ``(bounds, time, snr, frequency)``.

        Rows of channel ``i`` are ``[bounds[i], bounds[i + 1])`` of the three columns
        (``bounds`` has ``len(channels) + 1`` entries). Within a channel rows are ordered
        by ``(time, snr, frequency)``: a canonical order that does not depend on how the
        rows were chunked or concatenated. Cached; do not modify the arrays.
        """
        return group_rows(self.channel, self.time, self.snr, self.frequency, len(self.channels))

    @cached_property
    def time_sorted(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(channel, time, snr, frequency)`` in stable time order (the columns
        themselves when already sorted, as rows from the stream are). Cached."""
        cols = (self.channel, self.time, self.snr, self.frequency)
        if self.is_time_sorted:
            return cols
        order = np.argsort(self.time, kind="stable")
        ch, t, s, f = (c[order] for c in cols)
        return ch, t, s, f

    @cached_property
    def _by_channel(self) -> dict[str, ChannelTriggers]:
        bounds, t, s, f = self.grouped
        out: dict[str, ChannelTriggers] = {}
        for i, name in enumerate(self.channels):
            lo, hi = bounds[i], bounds[i + 1]
            out[name] = (t[lo:hi], s[lo:hi], f[lo:hi])
        return out

    @cached_property
    def _single(self) -> dict[str, ChannelTriggers]:
        return {}

    def for_channel(self, name: str) -> ChannelTriggers:
        """``(time, snr, frequency)`` of one channel, sorted by time (then snr, frequency).

        A channel not in the table gives three empty arrays. The returned arrays are
        shared with a cache: do not modify them.

        Until every channel has been grouped (:attr:`grouped`, which feature building
        needs), one channel is cut out by a mask and sorted alone: asking for the target
        channel of a 1,000-channel set then costs one pass, not a sort of every row.
        Both paths give the same arrays.
        """
        if "_by_channel" in self.__dict__ or "grouped" in self.__dict__:
            got = self._by_channel.get(name)
        else:
            got = self._single.get(name)
            if got is None and name in self.channels:
                rows = np.flatnonzero(self.channel == self.channels.index(name))
                t, s, f = self.time[rows], self.snr[rows], self.frequency[rows]
                order = np.lexsort((f, s, t))
                got = self._single[name] = (t[order], s[order], f[order])
        if got is None:
            z = np.zeros(0)
            return z, z, z
        return got

    def counts(self) -> dict[str, int]:
        """Number of rows per channel name."""
        n = np.bincount(self.channel, minlength=len(self.channels))
        return {name: int(n[i]) for i, name in enumerate(self.channels)}


def _in_order(sets: list[TriggerSet]) -> bool:
    """Whether sets known to be in time order follow each other in time (then so do
    their rows, without a pass over them); False: not known."""
    last = -np.inf
    for s in sets:
        if not s.__dict__.get("is_time_sorted"):
            return False
        if len(s):
            if not s.time[0] >= last:
                return False
            last = s.time[-1]
    return True


def group_rows(
    channel: np.ndarray, time: np.ndarray, snr: np.ndarray, frequency: np.ndarray, n_channels: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows grouped by channel, ``(bounds, time, snr, frequency)``, as :attr:`TriggerSet.grouped`.

    ``channel`` holds indices in ``[0, n_channels)``.
    """
    order = _channel_order(channel, time, snr, frequency, n_channels)
    bounds = np.searchsorted(channel[order], np.arange(n_channels + 1), side="left")
    return bounds.astype(np.int64), time[order], snr[order], frequency[order]


def _channel_order(
    channel: np.ndarray, time: np.ndarray, snr: np.ndarray, frequency: np.ndarray, n_channels: int
) -> np.ndarray:
    """Row order by ``(channel, time, snr, frequency)``, equal to a four-key lexsort.

    A stable sort by time (none when the rows are already in time order, as they come
    from the stream), then a stable radix sort by channel. That is the lexsort except
    within runs of rows of one channel with equal times (rare), which are then put in
    (snr, frequency) order; NaN times fall back to the lexsort.
    """
    n = channel.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.intp)
    if np.isnan(time).any():
        return np.lexsort((frequency, snr, time, channel))
    by_time = None if bool(np.all(time[1:] >= time[:-1])) else np.argsort(time, kind="stable")
    chan = channel if by_time is None else channel[by_time]
    # numpy's stable sort of integers of 16 bits or less is a radix sort (~10x faster).
    key = chan.astype(np.int16) if n_channels <= 1 << 15 else chan
    order = np.argsort(key, kind="stable")
    if by_time is not None:
        order = by_time[order]
    c, t = channel[order], time[order]
    tie = (c[1:] == c[:-1]) & (t[1:] == t[:-1])
    if bool(tie.any()):
        # Positions in a run of equal (channel, time); run ids from the run starts.
        in_run = np.zeros(n, dtype=bool)
        in_run[:-1] |= tie
        in_run[1:] |= tie
        pos = np.flatnonzero(in_run)
        starts = np.ones(pos.size, dtype=bool)
        starts[1:] = ~tie[pos[:-1]]
        run = np.cumsum(starts)
        sub = order[pos]
        order[pos] = sub[np.lexsort((frequency[sub], snr[sub], run))]
    return order
