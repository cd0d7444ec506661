"""Feature vectors: one row per sample time, the loudest trigger per channel nearby.

For a sample time ``t`` and each channel of a :class:`FeatureSpec`, the selected trigger
is the loudest (highest ``snr``) with ``t - window <= t_trig <= t + window`` (both bounds
evaluated in float64; this is ``|t_trig - t| <= window`` up to rounding at the last bit).
Ties in ``snr`` go to the earliest trigger (then the lowest frequency), so the choice
depends only on the set of triggers, never on how they were chunked or concatenated.

Columns per channel, channel-major (``chan0.snr, chan0.frequency, chan0.dt, chan1.snr``):

- ``snr``: the trigger's snr; **0** when the channel has no trigger in the window
  (triggers have snr above the generator threshold, so 0 means "nothing");
- ``frequency``: the trigger's frequency; **0** when missing;
- ``dt``: ``t_trig - t``; **+window** when missing (the window edge: "as far as can be").

Algorithm: per channel, two ``searchsorted`` calls find each window's index range in the
channel's sorted times; only non-empty ranges are resolved (most windows are empty at
production rates), by an O(1) range-argmax query on a sparse table built once per
channel. No Python loop runs over samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from idq_common.data.triggers import TriggerSet

__all__ = ["FEATURE_COLUMNS", "FeatureSpec", "feature_matrix", "grid_times"]

#: Columns a feature vector may carry per channel.
FEATURE_COLUMNS: tuple[str, ...] = ("snr", "frequency", "dt")


@dataclass(frozen=True)
class FeatureSpec:
    """Which channels and columns make a feature vector, and the window half-width.

    Parameters
    ----------
    channels : tuple of str
        Auxiliary channels, in column order (never the target channel).
    window : float
        Half-width in seconds of the window around each sample time.
    columns : tuple of str
        Per-channel columns, a subset of ``("snr", "frequency", "dt")`` in any order.
    """

    channels: tuple[str, ...]
    window: float
    columns: tuple[str, ...] = FEATURE_COLUMNS

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        object.__setattr__(self, "columns", tuple(self.columns))
        if not self.window > 0:
            raise ValueError(f"window must be > 0, got {self.window}")
        bad = [c for c in self.columns if c not in FEATURE_COLUMNS]
        if bad:
            raise ValueError(f"unknown feature columns {bad}; known: {FEATURE_COLUMNS}")
        if len(set(self.channels)) != len(self.channels):
            raise ValueError("duplicate channels in FeatureSpec")

    @property
    def names(self) -> tuple[str, ...]:
        """Column names of the matrix: ``"{channel}.{column}"``, channel-major."""
        return tuple(f"{ch}.{col}" for ch in self.channels for col in self.columns)

    @property
    def width(self) -> int:
        return len(self.channels) * len(self.columns)

    def column_index(self, channel: str, column: str) -> int:
        """Matrix column of ``channel``'s ``column``."""
        return self.channels.index(channel) * len(self.columns) + self.columns.index(column)


def grid_times(start: float, end: float, rate: float) -> np.ndarray:
    """Times ``start + k / rate`` for every ``k >= 0`` with the time ``< end``.

    Computed as ``start + k / rate`` for each integer ``k`` (not by accumulating a step),
    so no rounding error accumulates; with integer GPS bounds and a power-of-two rate
    (128 Hz) every time is exact, and the grid over ``[a, c)`` equals the grids over
    ``[a, b)`` and ``[b, c)`` joined, bit for bit. The count uses exact rational
    arithmetic on the float inputs, so no sample is lost or gained by rounding.
    """
    if rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    span = Fraction(end) - Fraction(start)
    if span <= 0:
        return np.zeros(0)
    n_exact = span * Fraction(rate)
    n = int(n_exact) + (0 if n_exact == int(n_exact) else 1)
    return start + np.arange(n, dtype=np.float64) / rate


def _sparse_argmax(values: np.ndarray, max_len: int) -> list[np.ndarray]:
    """Sparse table: level j holds, per i, the index of the max of values[i : i + 2**j].

    Ties keep the lower index (the earliest trigger). Levels stop at the longest range
    that will be queried, ``max_len``.
    """
    levels = [np.arange(values.size, dtype=np.int64)]
    j = 1
    while (1 << j) <= min(values.size, max_len):
        prev = levels[-1]
        half = 1 << (j - 1)
        a = prev[: values.size - (1 << j) + 1]
        b = prev[half : half + a.size]
        levels.append(np.where(values[b] > values[a], b, a))
        j += 1
    return levels


def _range_argmax(
    values: np.ndarray, table: list[np.ndarray], lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    """Index of the max of ``values[lo:hi]`` (non-empty ranges), earliest on ties."""
    length = hi - lo
    level = np.floor(np.log2(length)).astype(np.int64)
    # floor(log2) in float can be off by one at exact powers of two; fix both ways.
    level = np.where((1 << (level + 1)) <= length, level + 1, level)
    level = np.where((1 << level) > length, level - 1, level)
    out = np.empty(lo.size, dtype=np.int64)
    for j in np.unique(level):
        sel = level == j
        a = table[j][lo[sel]]
        b = table[j][hi[sel] - (1 << j)]
        va, vb = values[a], values[b]
        out[sel] = np.where(vb > va, b, np.where(vb == va, np.minimum(a, b), a))
    return out


def feature_matrix(
    triggers: TriggerSet, times: Sequence[float] | np.ndarray, spec: FeatureSpec
) -> np.ndarray:
    """Feature vectors of ``times``: shape ``(len(times), len(channels) * len(columns))``.

    Parameters
    ----------
    triggers : TriggerSet
        Triggers to pick from (channels absent from it count as silent).
    times : array-like
        Sample times, any order (rows follow the given order).
    spec : FeatureSpec
        Channels, window and columns.

    Returns
    -------
    numpy.ndarray
        float64 matrix, columns ``spec.names``; see the module docstring for defaults.
    """
    times = np.asarray(times, dtype=np.float64)
    n, ncol, w = times.size, len(spec.columns), spec.window
    out = np.empty((n, spec.width), dtype=np.float64)
    defaults = {"snr": 0.0, "frequency": 0.0, "dt": w}
    for k, col in enumerate(spec.columns):
        out[:, k::ncol] = defaults[col]
    if n == 0:
        return out
    order = np.argsort(times, kind="stable")
    st = times[order]
    lo_t, hi_t = st - w, st + w
    for c, name in enumerate(spec.channels):
        t, s, f = triggers.for_channel(name)
        if t.size == 0:
            continue
        lo = np.searchsorted(t, lo_t, side="left")
        hi = np.searchsorted(t, hi_t, side="right")
        hit = np.nonzero(hi > lo)[0]
        if hit.size == 0:
            continue
        lo_h, hi_h = lo[hit], hi[hit]
        max_len = int((hi_h - lo_h).max())
        # Common sparse case: at most one trigger per window needs no table.
        best = lo_h if max_len == 1 else _range_argmax(s, _sparse_argmax(s, max_len), lo_h, hi_h)
        rows = order[hit]
        base = c * ncol
        for k, col in enumerate(spec.columns):
            if col == "snr":
                out[rows, base + k] = s[best]
            elif col == "frequency":
                out[rows, base + k] = f[best]
            else:
                out[rows, base + k] = t[best] - st[hit]
    return out
