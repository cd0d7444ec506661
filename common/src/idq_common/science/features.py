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

Algorithm (no Python loop over channels or samples): sample times are sorted and
taken in chunks; a chunk's triggers (a slice of the time-sorted rows) are grouped by
channel, in time order, and the loudest row of every window is a
sliding-window maximum per channel (compiled with numba, :mod:`._windows`): both window
edges only move forward along the sorted sample times.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Protocol

import numpy as np

from idq_common.data.triggers import TriggerSet

log = logging.getLogger(__name__)

__all__ = [
    "FEATURE_COLUMNS",
    "FeatureBuilder",
    "FeatureSpec",
    "Picks",
    "RawMatrix",
    "build_features",
    "feature_matrix",
    "grid_times",
    "preload_kernels",
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


#: Sample-times x channels cells resolved at once: the picks (int64 + bool per cell,
#: ~2.3 MB) stay in L2/L3 while the builders read them; larger chunks share fewer
#: trigger rows between neighbours (measured: 2^15 -> 2^18 cells, -10 % per stride).
_CHUNK_CELLS = 1 << 18


def _kernels() -> Any:
    """The compiled kernels (numba: imported on the first feature build only)."""
    from idq_common.science import _windows

    return _windows


def preload_kernels(modules: Sequence[str] = ()) -> threading.Thread:
    """Import numba and load the compiled kernels in a background thread, now; then
    import ``modules`` (others a stage imports on its first stride, e.g. timeseries'
    ``scipy.special``, ~0.3 CPU s).

    A stage that builds features pays ~1 CPU s for them at its first stride (numba's
    import and implementations, each kernel's machine code from the cache), in its
    main thread. Started at the stage's start, the thread does that work while the
    main thread waits on Kafka (connecting, joining the group, the first fetch), so
    the first stride finds them loaded: the same CPU, less wall time. Safe to race
    with a feature build: imports and numba's compilation are serialised by their own
    locks. A failure here is only logged; the first feature build meets it again.
    """

    def load() -> None:
        try:
            _kernels().warm()
            for name in modules:
                importlib.import_module(name)
        except Exception:  # the feature build will raise it where it matters
            log.debug("kernel preload failed", exc_info=True)

    thread = threading.Thread(target=load, name="idq-kernels", daemon=True)
    thread.start()
    return thread


def _column_kinds(columns: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """The row columns (all but ``dt``) and, per column, its index among them (-1: dt)."""
    names = [c for c in columns if c != "dt"]
    kinds = np.array([-1 if c == "dt" else names.index(c) for c in columns], dtype=np.int64)
    return names, kinds


class Picks:
    """Which trigger every (sample, channel) cell of a chunk picked (one window resolution).

    The chunk's trigger rows, grouped by spec channel, are followed by one default row
    per channel (snr 0, frequency 0; what a cell without a trigger picks), so a per-row
    array of length :attr:`n_rows` gathered with :attr:`best` gives the cells of any
    column, mapped or not, with the defaults in place. A builder computes what it needs
    from this (some columns, some channels, a per-channel transform per trigger) instead
    of mapping every cell of a full matrix.

    Attributes
    ----------
    times : numpy.ndarray
        The chunk's sample times, sorted, shape ``(n,)``.
    window : float
        Half-width of the windows.
    best : numpy.ndarray
        int64 ``(n, nch)``: the picked row of each cell.
    hit : numpy.ndarray
        bool ``(n, nch)``: the cell has a trigger.
    channel : numpy.ndarray
        int64 ``(n_rows,)``: spec channel of each row (defaults included).
    """

    def __init__(
        self,
        times: np.ndarray,
        window: float,
        best: np.ndarray,
        hit: np.ndarray,
        grouped: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
        picked: np.ndarray | None = None,
    ) -> None:
        bounds, t, s, f = grouped  # rows then the per-channel defaults (_windows.group)
        self.times, self.window, self.best, self.hit = times, window, best, hit
        self._picked = picked
        self.nch = bounds.size - 1
        self._rows = {"time": t, "snr": s, "frequency": f}
        self._bounds = bounds
        self._cache: dict[Any, np.ndarray] = {}

    @property
    def channel(self) -> np.ndarray:
        """Spec channel of each row, the per-channel default rows included."""
        got = self._cache.get("channel")
        if got is None:
            counts = np.append(np.diff(self._bounds), np.ones(self.nch, dtype=np.int64))
            chans = np.arange(self.nch, dtype=np.int64)
            got = self._cache["channel"] = np.repeat(np.concatenate([chans, chans]), counts)
        return got

    @property
    def picked(self) -> np.ndarray:
        """int64 indices of the rows some cell picked (and possibly other rows, e.g. the
        defaults), sorted: a per-row array is only ever read at these rows, so a
        builder's per-row map need not compute the others."""
        got = self._cache.get("picked")
        if got is None:
            n_rows = self._rows["time"].size
            mask = self._picked
            got = np.flatnonzero(mask) if mask is not None else np.arange(n_rows)
            self._cache["picked"] = got
        return got

    def rows(self, name: str) -> np.ndarray:
        """Per-row values of ``snr`` or ``frequency`` (defaults 0 included), read-only."""
        return self._rows[name]

    def _chans(self, channels: np.ndarray | None) -> np.ndarray:
        if channels is None:
            return np.arange(self.nch, dtype=np.int64)
        return np.ascontiguousarray(channels, dtype=np.int64)

    def write(
        self, values: np.ndarray, out: np.ndarray, cols: np.ndarray, channels: np.ndarray
    ) -> None:
        """``out[:, cols[m]] = values[best[:, channels[m]]]``: a per-row array (length
        :attr:`n_rows`, defaults included) gathered into columns of ``out``, a C-contiguous
        ``(n, width)`` block, cast to its dtype."""
        _kernels().gather_cols(
            np.ascontiguousarray(values, dtype=np.float64),
            self.best,
            self._chans(channels),
            out,
            np.ascontiguousarray(cols, dtype=np.int64),
        )

    def write_dt(
        self,
        out: np.ndarray,
        cols: np.ndarray,
        channels: np.ndarray,
        mode: str = "raw",
        lags: np.ndarray | None = None,
        mean: np.ndarray | None = None,
        scale: np.ndarray | None = None,
        tol: np.ndarray | None = None,
        values: np.ndarray | None = None,
    ) -> None:
        """A column derived from ``dt`` per channel ``channels[m]`` into ``out[:, cols[m]]``.

        ``dt`` is ``t_trig - t`` where the cell has a trigger, else the window; with
        ``lags`` (per listed channel) ``dt - lag`` (a missing trigger kept at the window);
        ``mode``: ``"raw"`` the value, ``"closeness"`` ``1 - min(|dt| / window, 1)``,
        ``"scaled"`` ``(closeness - mean) / scale`` (per listed channel), ``"signed"``
        ``clip(dt / window, -1, 1)``, ``"lag_snr"`` the picked row's ``values`` (per
        row, defaults included) where ``|dt| <= tol`` (per listed channel), else 0.
        One compiled pass, no temporaries.
        """
        k = _kernels()
        chans = self._chans(channels)
        zeros = np.zeros(chans.size)

        def per(x: np.ndarray | None) -> np.ndarray:
            return zeros if x is None else np.ascontiguousarray(x, dtype=np.float64)

        k.dt_cols(
            self.best,
            self.hit,
            self._rows["time"],
            self.times,
            float(self.window),
            chans,
            per(lags),
            lags is not None,
            getattr(k, f"DT_{mode.upper()}"),
            per(tol if mode == "lag_snr" else mean),
            per(scale),
            np.ascontiguousarray(values, dtype=np.float64) if values is not None else zeros,
            out,
            np.ascontiguousarray(cols, dtype=np.int64),
        )

    def write_matrix(
        self,
        out: np.ndarray,
        columns: Sequence[str],
        rows: Mapping[str, np.ndarray],
        mode: str = "raw",
        lags: np.ndarray | None = None,
        mean: np.ndarray | None = None,
        scale: np.ndarray | None = None,
    ) -> None:
        """A channel-major matrix of every channel into ``out`` (``(n, nch * k)``).

        Column ``j`` of channel ``c`` (``out[:, c * k + j]``) is, for ``columns[j]`` other
        than ``dt``, ``rows[columns[j]]`` (per row, defaults included) of the picked row;
        for ``dt``, :meth:`write_dt`'s column in ``mode`` (``lags``, ``mean``, ``scale``
        per channel). One compiled pass for all columns.
        """
        names, kinds = _column_kinds(columns)
        n_rows = self._rows["time"].size
        rowvals = np.empty((len(names), n_rows))
        for r, name in enumerate(names):
            rowvals[r] = rows[name]
        per = self._per_channel
        _kernels().matrix_cells(
            self.best,
            self.hit,
            self._rows["time"],
            self.times,
            float(self.window),
            per(lags),
            lags is not None,
            rowvals,
            kinds,
            getattr(_kernels(), f"DT_{mode.upper()}"),
            per(mean),
            per(scale),
            out,
        )

    def _per_channel(self, x: np.ndarray | None) -> np.ndarray:
        """A per-channel kernel argument: ``x`` as float64, or zeros when not given."""
        return np.zeros(self.nch) if x is None else np.ascontiguousarray(x, dtype=np.float64)

    @property
    def n_rows(self) -> int:
        """Grouped trigger rows, the per-channel default rows included."""
        return int(self._rows["time"].size)

    def scaled_rows(
        self,
        values: np.ndarray,
        mean: np.ndarray,
        scale: np.ndarray,
        coef: np.ndarray,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """``((values - mean) / scale) * coef`` per row, the per-channel ``mean``,
        ``scale`` and ``coef`` of each row's channel; computed at the :attr:`picked` rows
        only, into ``out`` (float64, :attr:`n_rows`; new zeros if None)."""
        if out is None:
            out = np.zeros(self.n_rows)

        def per(x: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(x, dtype=np.float64)

        _kernels().scaled_rows(
            per(values), self.picked, self.channel, per(mean), per(scale), per(coef), out
        )
        return out

    def write_linear(
        self,
        out: np.ndarray,
        columns: Sequence[str],
        rowprods: np.ndarray,
        lags: np.ndarray | None,
        mean: np.ndarray,
        scale: np.ndarray,
        coef: np.ndarray,
    ) -> None:
        """``out[i]``: the dot product of row ``i`` of :meth:`write_matrix`'s matrix in
        ``"scaled"`` mode with per-column weights, without making the matrix.

        ``rowprods[r]``, for the ``r``-th column other than ``dt`` in ``columns``: per
        row (defaults included; C-contiguous float64, :attr:`n_rows` wide), the cell
        times its column's weight; ``dt``'s cells are scaled by ``mean``/``scale`` and
        multiplied by ``coef`` (per channel). Summed in the order of numpy's
        ``einsum("ij,j->i")`` (:func:`idq_common.science._windows.linear_cells`).
        """
        names, kinds = _column_kinds(columns)
        rows = np.ascontiguousarray(rowprods, dtype=np.float64).reshape(len(names), self.n_rows)
        per = self._per_channel
        _kernels().linear_cells(
            self.best,
            self.hit,
            self._rows["time"],
            self.times,
            float(self.window),
            per(lags),
            lags is not None,
            rows,
            kinds,
            per(mean),
            per(scale),
            per(coef),
            out,
        )

    def cells(self, name: str, channels: np.ndarray | None = None) -> np.ndarray:
        """Raw cells of column ``name``, shape ``(n, nch)`` or ``(n, len(channels))``.

        ``dt`` is ``t_trig - t`` where the cell has a trigger, else the window; the
        others are the picked row's value (0 without a trigger).
        """
        chans = self._chans(channels)
        out = np.empty((self.times.size, chans.size))
        cols = np.arange(chans.size, dtype=np.int64)
        if name == "dt":
            self.write_dt(out, cols, chans)
        else:
            self.write(self._rows[name], out, cols, chans)
        return out

    def memo(self, key: Any, fn: Callable[[], np.ndarray]) -> np.ndarray:
        """``fn()`` once per chunk and key (per-row maps shared by several builders)."""
        got = self._cache.get(key)
        if got is None:
            got = self._cache[key] = fn()
        return got


class FeatureBuilder(Protocol):
    """What a classifier ranks, built chunk by chunk from window resolutions.

    :func:`build_features` allocates ``new(n)`` and calls ``fill`` with each chunk's
    :class:`Picks` and the chunk's block of rows. Builders that compare equal are built
    once and shared.
    """

    def new(self, n: int) -> np.ndarray: ...

    def fill(self, picks: Picks, out: np.ndarray) -> None: ...


@dataclass(frozen=True)
class RawMatrix:
    """The feature matrix of a spec (:func:`feature_matrix`), as a builder."""

    columns: tuple[str, ...]
    width: int

    def new(self, n: int) -> np.ndarray:
        return np.empty((n, self.width), dtype=np.float64)

    def fill(self, picks: Picks, out: np.ndarray) -> None:
        rows = {name: picks.rows(name) for name in self.columns if name != "dt"}
        picks.write_matrix(out, self.columns, rows)


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
    return build_features(triggers, times, spec, [RawMatrix(spec.columns, spec.width)])[0]


def build_features(
    triggers: TriggerSet,
    times: Sequence[float] | np.ndarray,
    spec: FeatureSpec,
    builders: Sequence[FeatureBuilder],
) -> list[np.ndarray]:
    """What each builder makes of the windows of ``times`` (rows follow ``times``).

    The windows are resolved once per chunk of sorted sample times for all builders
    (see :func:`feature_matrix`); each builder fills its rows of the chunk.
    """
    times = np.asarray(times, dtype=np.float64)
    n, nch, w = times.size, len(spec.channels), spec.window
    outs = [b.new(n) for b in builders]
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
        rows = _window_rows(t, lo_t[a:b], hi_t[a:b], r0, r1)
        select = rows is not None
        rows = rows if rows is not None else _NO_ROWS
        grouped = _kernels().group(chan, col_of, t, s, f, nch, rows, r0, r1, select)
        picks = _resolve(grouped, st[a:b], w)
        for builder, out in zip(builders, sorted_outs, strict=True):
            builder.fill(picks, out[a:b])
    if not in_order:
        for out, sorted_out in zip(outs, sorted_outs, strict=True):
            out[order] = sorted_out
    return outs


#: ``group``'s row list when it reads a slice
_NO_ROWS = np.zeros(0, dtype=np.int64)


def _window_rows(
    t: np.ndarray, lo: np.ndarray, hi: np.ndarray, r0: int, r1: int
) -> np.ndarray | None:
    """The rows of ``t[r0:r1]`` inside some window ``[lo[i], hi[i]]`` (both sorted), or
    None when the windows leave no gap (dense grids: every row is in one).

    Sparse sample times (the evaluate stage's: a few per stride, windows of 0.1 s)
    would otherwise group, map and scale every trigger of the stride. A row in no window
    is never picked and never displaces a picked one (the sliding maximum drops it with
    everything before it when the next window starts), so the picks, and every value
    built from them, are the same without it.
    """
    gap = lo[1:] > hi[:-1]
    if not gap.any():
        return None
    first = np.flatnonzero(np.concatenate(([True], gap)))
    last = np.flatnonzero(np.concatenate((gap, [True])))
    starts = np.searchsorted(t, lo[first], side="left")
    ends = np.searchsorted(t, hi[last], side="right")
    lens = ends - starts
    offsets = np.repeat(starts - np.concatenate(([0], np.cumsum(lens)[:-1])), lens)
    rows = offsets + np.arange(int(lens.sum()))
    if rows.size == r1 - r0:
        return None
    return rows


def _resolve(
    grouped: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], st: np.ndarray, w: float
) -> Picks:
    """The picks of the sorted sample times ``st``, every channel at once.

    Window ``[t - w, t + w]`` of spec channel c covers grouped rows ``[lo, hi)``: lo
    counts c's triggers with ``time < t - w``, hi those with ``time <= t + w``; the
    loudest row of each window is a compiled sliding-window maximum per channel
    (:func:`idq_common.science._windows.resolve`), O(rows + samples) per channel.
    """
    bounds, t, s, f = grouped
    n, nch = st.size, bounds.size - 1
    best = np.empty((n, nch), dtype=np.int64)
    hit = np.empty((n, nch), dtype=bool)
    picked = np.zeros(t.size, dtype=bool)
    _kernels().resolve(bounds, t, s, f, st, float(w), best, hit, picked)
    return Picks(st, w, best, hit, grouped, picked)
