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

__all__ = ["ChannelTriggers", "TriggerSet", "in_segments"]

#: (time, snr, frequency) of one channel, sorted by time.
ChannelTriggers = tuple[np.ndarray, np.ndarray, np.ndarray]


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
        if len(set(self.channels)) != len(self.channels):
            raise ValueError("TriggerSet channel names must be unique")
        if n and (self.channel.min() < 0 or self.channel.max() >= len(self.channels)):
            raise ValueError("TriggerSet channel index out of range of the channel table")

    # -- construction ---------------------------------------------------------------
    @classmethod
    def empty(cls, channels: Iterable[str] = ()) -> TriggerSet:
        """A set with no rows over the given channel table."""
        z = np.zeros(0)
        return cls(tuple(channels), np.zeros(0, dtype=np.int32), z, z, z)

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
        names: dict[str, int] = {}
        for s in sets:
            for n in s.channels:
                names.setdefault(n, len(names))
        if not sets:
            return cls.empty()
        chans = []
        for s in sets:
            remap = np.array([names[n] for n in s.channels], dtype=np.int32)
            chans.append(remap[s.channel] if len(s.channels) else s.channel)
        time = np.concatenate([s.time for s in sets])
        order = np.argsort(time, kind="stable")
        return cls(
            tuple(names),
            np.concatenate(chans)[order],
            time[order],
            np.concatenate([s.snr for s in sets])[order],
            np.concatenate([s.frequency for s in sets])[order],
        )

    # -- selection ------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.channel.shape[0])

    def take(self, index: np.ndarray) -> TriggerSet:
        """Rows at ``index`` (boolean mask or integer positions), same channel table."""
        return TriggerSet(
            self.channels,
            self.channel[index],
            self.time[index],
            self.snr[index],
            self.frequency[index],
        )

    def select_time(self, start: float, end: float) -> TriggerSet:
        """Rows with ``start <= time < end``."""
        return self.take((self.time >= start) & (self.time < end))

    def restrict(self, segs: segmentlist) -> TriggerSet:
        """Rows whose time falls inside ``segs`` (half-open segments)."""
        return self.take(in_segments(self.time, segs))

    def select_channels(self, names: Iterable[str]) -> TriggerSet:
        """Rows of the named channels only (unknown names are ignored); table unchanged."""
        wanted = {n for n in names}
        keep = np.array([n in wanted for n in self.channels], dtype=bool)
        if keep.size == 0:
            return self
        return self.take(keep[self.channel])

    # -- per-channel access ---------------------------------------------------------
    @cached_property
    def _by_channel(self) -> dict[str, ChannelTriggers]:
        # One lexsort groups every channel at once (no per-channel mask passes). Within
        # a channel rows are ordered by (time, snr, frequency): a canonical order that
        # does not depend on how the rows were chunked or concatenated.
        order = np.lexsort((self.frequency, self.snr, self.time, self.channel))
        chan = self.channel[order]
        bounds = np.searchsorted(chan, np.arange(len(self.channels) + 1), side="left")
        t, s, f = self.time[order], self.snr[order], self.frequency[order]
        out: dict[str, ChannelTriggers] = {}
        for i, name in enumerate(self.channels):
            lo, hi = bounds[i], bounds[i + 1]
            out[name] = (t[lo:hi], s[lo:hi], f[lo:hi])
        return out

    def for_channel(self, name: str) -> ChannelTriggers:
        """``(time, snr, frequency)`` of one channel, sorted by time (then snr, frequency).

        A channel not in the table gives three empty arrays. The returned arrays are
        shared with a cache: do not modify them.
        """
        got = self._by_channel.get(name)
        if got is None:
            z = np.zeros(0)
            return z, z, z
        return got

    def counts(self) -> dict[str, int]:
        """Number of rows per channel name."""
        n = np.bincount(self.channel, minlength=len(self.channels))
        return {name: int(n[i]) for i, name in enumerate(self.channels)}
