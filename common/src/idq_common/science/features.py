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

Algorithm (every channel at once, no Python loop over channels or samples): sample
times are sorted and taken in chunks; a chunk's triggers (a slice of the time-sorted
rows) are grouped by channel in (time, snr, frequency) order; each trigger's position
among the sorted window edges is one ``searchsorted``, and a histogram over (position,
channel) with a cumulative sum gives every window's row range ``[lo, hi)``. The loudest
row of each non-empty range comes from an O(1) range-argmax query on a sparse table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Protocol

import numpy as np

from idq_common.data.triggers import TriggerSet, group_rows

__all__ = [
    "FEATURE_COLUMNS",
    "ColumnMap",
    "FeatureSpec",
    "feature_matrices",
    "feature_matrix",
    "grid_times",
]

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
        object.__setattr__(self, "window", float(self.window))
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
        """Columns of the matrix."""
        return len(self.channels) * len(self.columns)

    @property
    def n_features(self) -> int:
        """Columns of the matrix (what a model is trained on)."""
        return self.width

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (stored in a model's header)."""
        return {
            "channels": list(self.channels),
            "window": self.window,
            "columns": list(self.columns),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureSpec:
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(d["channels"]), float(d["window"]), tuple(d["columns"]))

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


#: Sample-times x channels cells resolved at once: small enough that the temporaries
#: (a few int64 arrays of this many cells) stay in cache.
_CHUNK_CELLS = 1 << 17


def _sparse_table(values: np.ndarray, max_len: int) -> np.ndarray:
    """Sparse table: row j holds, per i, the index of the max of values[i : i + 2**j].

    Ties keep the lower index (the earliest trigger). Rows stop at the longest range
    that will be queried, ``max_len``; row j is valid for ``i <= values.size - 2**j``
    (the rest is padding, never read by a query of length ``>= 2**j``).
    """
    n = values.size
    levels = 1
    while (1 << levels) <= min(n, max_len):
        levels += 1
    table = np.empty((levels, n), dtype=np.int64)
    table[0] = np.arange(n, dtype=np.int64)
    for j in range(1, levels):
        half = 1 << (j - 1)
        m = n - (1 << j) + 1
        a = table[j - 1, :m]
        b = table[j - 1, half : half + m]
        table[j, :m] = np.where(values[b] > values[a], b, a)
        table[j, m:] = 0
    return table


def _range_argmax(
    values: np.ndarray, table: np.ndarray, lo: np.ndarray, length: np.ndarray
) -> np.ndarray:
    """Index of the max of ``values[lo:lo + length]`` (``length >= 1``), earliest on ties."""
    # frexp is exact on integers: exponent - 1 == floor(log2(length)).
    level = np.frexp(length.astype(np.float64))[1].astype(np.int64) - 1
    flat = table.reshape(-1)
    ia = level * values.size + lo
    a = flat.take(ia)
    b = flat.take(ia + (length - (np.int64(1) << level)))
    va, vb = values.take(a), values.take(b)
    return np.where((vb > va) | ((vb == va) & (b < a)), b, a)


class ColumnMap(Protocol):
    """An elementwise map of one column's values (e.g. a classifier's preprocessing).

    Elementwise: ``m(col, v)[i]`` depends only on ``v[i]``, so mapping the triggers'
    values before picking them gives the same matrix as mapping the picked values.
    """

    def __call__(self, column: str, values: np.ndarray) -> np.ndarray: ...


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

    Notes
    -----
    Sample times are taken in sorted chunks of about ``_CHUNK_CELLS / len(channels)``;
    each chunk sees only the triggers that can fall in its windows (a slice of the
    time-sorted rows), grouped by spec channel, so the work per chunk is bounded and
    a result never depends on the chunking (each window lies inside its chunk's slice).
    """
    return feature_matrices(triggers, times, spec, [None])[0]


def feature_matrices(
    triggers: TriggerSet,
    times: Sequence[float] | np.ndarray,
    spec: FeatureSpec,
    maps: Sequence[ColumnMap | None],
) -> list[np.ndarray]:
    """:func:`feature_matrix` once per entry of ``maps``, each column mapped by it.

    The windows are resolved once for all of them; an entry None gives the raw matrix.
    A map is applied to the triggers' values (and the missing-trigger defaults) for
    ``snr`` and ``frequency``, far fewer than the cells (a window holds a few
    triggers, a trigger lies in many windows), and to the cells for ``dt``.
    """
    times = np.asarray(times, dtype=np.float64)
    n, nch, w = times.size, len(spec.channels), spec.window
    outs = [np.empty((n, spec.width), dtype=np.float64) for _ in maps]
    if n == 0 or nch == 0:
        return outs
    order = np.argsort(times, kind="stable")
    st = times[order]
    in_order = bool(np.all(order[1:] > order[:-1]))
    sorted_outs = outs if in_order else [np.empty_like(o) for o in outs]
    # Spec column of every channel of the set (nch: not in the spec).
    index = {name: i for i, name in enumerate(spec.channels)}
    col_of = np.array([index.get(name, nch) for name in triggers.channels] + [nch], dtype=np.int64)
    chan, t, s, f = triggers.time_sorted
    lo_t, hi_t = st - w, st + w
    step = max(1, _CHUNK_CELLS // nch)
    for a in range(0, n, step):
        b = min(a + step, n)
        # Rows with lo_t[a] <= time <= hi_t[b - 1]: every trigger of these windows.
        r0 = int(np.searchsorted(t, lo_t[a], side="left"))
        r1 = int(np.searchsorted(t, hi_t[b - 1], side="right"))
        col = col_of[chan[r0:r1]]
        want = col < nch
        grouped = group_rows(col[want], t[r0:r1][want], s[r0:r1][want], f[r0:r1][want], nch)
        chunk = [(o[a:b], m) for o, m in zip(sorted_outs, maps, strict=True)]
        _fill(grouped, st[a:b], w, spec.columns, chunk)
    if not in_order:
        for out, sorted_out in zip(outs, sorted_outs, strict=True):
            out[order] = sorted_out
    return outs


def _fill(
    grouped: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    st: np.ndarray,
    w: float,
    columns: tuple[str, ...],
    outs: list[tuple[np.ndarray, ColumnMap | None]],
) -> None:
    """Rows of each ``out`` for the sorted sample times ``st``, every channel at once.

    Window ``[t - w, t + w]`` of spec channel c covers grouped rows ``[lo, hi)``: lo
    counts c's triggers with ``time < t - w``, hi those with ``time <= t + w``, exactly
    what ``searchsorted`` on the channel's times gives. A trigger's position along the
    sorted windows is one ``searchsorted``; a histogram over (position, channel) and a
    cumulative sum give lo and hi of every (sample, channel) cell.
    """
    bounds, t, s, f = grouped
    n, nch, ncol, rows = st.size, bounds.size - 1, len(columns), t.size
    defaults = {"snr": 0.0, "frequency": 0.0, "dt": w}
    if rows == 0:
        for out, cmap in outs:
            cells = out.reshape(n, nch, ncol)
            for k, name in enumerate(columns):
                value = np.array([defaults[name]])
                cells[:, :, k] = (value if cmap is None else cmap(name, value))[0]
        return
    col = np.repeat(np.arange(nch, dtype=np.int64), np.diff(bounds))
    size = (n + 1) * (nch + 1)
    # window j starts after trigger r iff j >= #(lo_t <= time_r); it reaches trigger r
    # iff j >= #(hi_t < time_r).
    before = np.searchsorted(st - w, t, side="right") * (nch + 1) + col
    upto = np.searchsorted(st + w, t, side="left") * (nch + 1) + col
    lo = np.cumsum(np.bincount(before, minlength=size).reshape(n + 1, nch + 1), axis=0)
    hi = np.cumsum(np.bincount(upto, minlength=size).reshape(n + 1, nch + 1), axis=0)
    lo = lo[:n, :nch] + bounds[:nch]
    length = hi[:n, :nch] + bounds[:nch] - lo
    hit = length > 0
    if int(length.max()) > 1:
        # Empty cells query a valid one-row range; their answer is masked below.
        table = _sparse_table(s, int(length.max()))
        best = _range_argmax(s, table, np.minimum(lo, rows - 1), np.maximum(length, 1))
    else:
        # Common sparse case: at most one trigger per window needs no table.
        best = lo
    # Empty cells point at an appended default row (snr 0, frequency 0).
    best = np.where(hit, best, rows)
    dt = None
    for out, cmap in outs:
        cells = out.reshape(n, nch, ncol)  # a view: out is a C-contiguous block of rows
        for k, name in enumerate(columns):
            if name == "dt":
                if dt is None:
                    dt = np.where(hit, np.append(t, 0.0).take(best) - st[:, None], w)
                cells[:, :, k] = dt if cmap is None else cmap(name, dt)
            else:
                values = np.append(s if name == "snr" else f, 0.0)
                cells[:, :, k] = (values if cmap is None else cmap(name, values)).take(best)
