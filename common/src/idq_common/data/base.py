"""The data-source abstraction: :class:`ClassifierData` and :class:`InMemoryData`.

A ``ClassifierData`` covers a GPS span ``[start, end)`` with analysis segments ``segs``
and hands out the triggers inside them, plus the two kinds of sample times classifiers
need: glitch times (``target_times``) and clean times (``random_times``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping

import numpy as np
from igwn_segments import segment, segmentlist

from idq_common.data._hashrng import hash_uniform, poisson_from_uniform
from idq_common.data.triggers import TriggerSet, in_segments

__all__ = ["COLUMNS", "Bounds", "ClassifierData", "InMemoryData", "apply_bounds", "clip_segs"]

#: Columns every trigger carries.
COLUMNS: tuple[str, ...] = ("time", "snr", "frequency")

#: ``{column: (low inclusive, high exclusive)}`` over ``snr`` / ``frequency``.
Bounds = Mapping[str, tuple[float, float]]


def clip_segs(segs: Iterable | None, start: float, end: float) -> segmentlist:
    """``segs`` coalesced and cut to ``[start, end)``; ``None`` means the whole span."""
    span = segmentlist([segment(start, end)]) if end > start else segmentlist()
    if segs is None:
        return span
    return (segmentlist(segs).coalesce() & span).coalesce()


def apply_bounds(snr: np.ndarray, frequency: np.ndarray, bounds: Bounds | None) -> np.ndarray:
    """Mask of rows with ``low <= value < high`` for every bounded column."""
    mask = np.ones(snr.shape, dtype=bool)
    cols = {"snr": snr, "frequency": frequency}
    for name, (low, high) in (bounds or {}).items():
        if name not in cols:
            raise ValueError(f"bounds on unknown column {name!r} (known: snr, frequency)")
        mask &= (cols[name] >= low) & (cols[name] < high)
    return mask


class ClassifierData(ABC):
    """Triggers over a span and its segments, plus sample-time extraction.

    Subclasses implement :meth:`_read` (every trigger they hold for ``[start, end)``,
    unfiltered); this base class filters to the span and segments and caches the result.

    Parameters
    ----------
    start, end : float
        GPS span, half-open.
    segs : segmentlist, optional
        Analysis segments; default the whole span. Always kept inside ``[start, end)``.
    channels : iterable of str, optional
        Channels to keep; default every channel the source has.
    """

    def __init__(
        self,
        start: float,
        end: float,
        segs: Iterable | None = None,
        channels: Iterable[str] | None = None,
    ) -> None:
        if end < start:
            raise ValueError(f"end {end} before start {start}")
        self._start = float(start)
        self._end = float(end)
        self._segs = clip_segs(segs, self._start, self._end)
        self._channels = tuple(channels) if channels is not None else None
        self._cache: TriggerSet | None = None

    # -- span -----------------------------------------------------------------------
    @property
    def start(self) -> float:
        return self._start

    @property
    def end(self) -> float:
        return self._end

    @property
    def segs(self) -> segmentlist:
        """Analysis segments (a copy; use :meth:`restrict_segments` to change them)."""
        return segmentlist(self._segs)

    @property
    def livetime(self) -> float:
        return float(abs(self._segs))

    @property
    def channels(self) -> tuple[str, ...]:
        """Channels this source serves (its triggers' table when not configured)."""
        if self._channels is not None:
            return self._channels
        return self.triggers().channels

    @property
    def columns(self) -> tuple[str, ...]:
        return COLUMNS

    def restrict_segments(self, segs: Iterable) -> None:
        """Intersect the segments with ``segs`` and drop cached triggers now outside."""
        self._segs = (self._segs & segmentlist(segs).coalesce()).coalesce()
        if self._cache is not None:
            self._cache = self._cache.restrict(self._segs)

    # -- triggers -------------------------------------------------------------------
    @abstractmethod
    def _read(self) -> TriggerSet:
        """Every trigger the source has for ``[start, end)`` (may include more)."""

    def triggers(self) -> TriggerSet:
        """Rows in ``[start, end)`` and in ``segs`` (of the configured channels)."""
        if self._cache is None:
            trig = self._read().select_time(self._start, self._end).restrict(self._segs)
            if self._channels is not None:
                trig = trig.select_channels(self._channels)
            self._cache = trig
        return self._cache

    def invalidate(self) -> None:
        """Forget cached triggers (subclasses call this when their data changes)."""
        self._cache = None

    # -- sample times ---------------------------------------------------------------
    def target_times(
        self, target_channel: str, bounds: Bounds | None = None, *, segs: Iterable | None = None
    ) -> np.ndarray:
        """Sorted times of ``target_channel`` triggers within ``bounds`` and inside segs.

        Parameters
        ----------
        target_channel : str
            Channel whose triggers are the glitches.
        bounds : mapping, optional
            ``{"snr": (low, high), "frequency": (low, high)}``; low inclusive, high
            exclusive. ``None`` keeps every trigger.
        segs : segmentlist, optional
            Further restrict the times to these segments (e.g. the strides of a padded
            umbrella); the triggers are not touched.
        """
        t, s, f = self.triggers().for_channel(target_channel)
        times = t[apply_bounds(s, f, bounds)]
        if segs is not None:
            times = times[in_segments(times, segmentlist(segs))]
        return np.unique(times)

    def random_times(
        self,
        rate: float,
        dirty_channel: str,
        dirty_bounds: Bounds | None,
        dirty_window: float,
        seed: int,
        *,
        segs: Iterable | None = None,
    ) -> np.ndarray:
        """Clean sample times: a Poisson process at ``rate`` inside segs, minus dirt.

        Times within ``dirty_window`` (inclusive) of a ``dirty_channel`` trigger passing
        ``dirty_bounds`` are dropped.

        The draw is keyed on GPS time, not on the span: for each integer GPS second
        ``n`` a hash of ``(seed, n, k)`` gives the Poisson count (``k = 0``) and the
        offsets inside ``[n, n + 1)`` (``k >= 1``). The result is therefore a fixed
        function of (seed, rate) filtered by the segments, so the times over ``[a, c)``
        equal those over ``[a, b)`` followed by ``[b, c)`` for any ``b``, and are the same
        on every run. (The dirt exclusion sees only this source's triggers: near a span
        edge, give the source padding and pass the wanted ``segs``.)

        Parameters
        ----------
        rate : float
            Mean times per second of livetime (production 0.2 Hz).
        dirty_channel, dirty_bounds, dirty_window
            The exclusion rule (production: the target channel, snr >= 5.5, 0.5 s).
        seed : int
            Seed of the draw.
        segs : segmentlist, optional
            Further restrict the times to these segments.

        Returns
        -------
        numpy.ndarray
            Sorted float64 GPS times.
        """
        if rate < 0:
            raise ValueError(f"rate must be >= 0, got {rate}")
        use = self._segs if segs is None else (self._segs & segmentlist(segs).coalesce())
        if rate == 0 or abs(use) == 0:
            return np.zeros(0)
        times = draw_poisson_times(rate, use, seed)
        dirty = self.target_times(dirty_channel, dirty_bounds)
        if dirty.size and times.size:
            # Nearest dirty trigger on each side decides exclusion.
            i = np.searchsorted(dirty, times)
            left = np.abs(times - dirty[np.maximum(i - 1, 0)])
            right = np.abs(dirty[np.minimum(i, dirty.size - 1)] - times)
            times = times[np.minimum(left, right) > dirty_window]
        return times


def draw_poisson_times(rate: float, segs: segmentlist, seed: int) -> np.ndarray:
    """Poisson times at ``rate`` inside ``segs``, keyed on integer GPS seconds.

    See :meth:`ClassifierData.random_times` for why the draw is keyed on GPS time.
    """
    out = []
    for seg in segmentlist(segs).coalesce():
        lo, hi = float(seg[0]), float(seg[1])
        seconds = np.arange(math.floor(lo), math.ceil(hi), dtype=np.int64)
        if seconds.size == 0:
            continue
        counts = poisson_from_uniform(hash_uniform(seed, seconds, 0), rate)
        total = int(counts.sum())
        if total == 0:
            continue
        sec = np.repeat(seconds, counts)
        # k-th draw within its second: position minus the second's first position.
        first = np.repeat(np.cumsum(counts) - counts, counts)
        k = np.arange(total) - first + 1
        t = sec + hash_uniform(seed, sec, k)
        out.append(t[(t >= lo) & (t < hi)])
    if not out:
        return np.zeros(0)
    return np.sort(np.concatenate(out))


class InMemoryData(ClassifierData):
    """A :class:`TriggerSet` held in memory over a span and segments."""

    def __init__(
        self,
        triggers: TriggerSet,
        start: float,
        end: float,
        segs: Iterable | None = None,
        channels: Iterable[str] | None = None,
    ) -> None:
        super().__init__(start, end, segs, channels)
        self._triggers = triggers

    def _read(self) -> TriggerSet:
        return self._triggers
