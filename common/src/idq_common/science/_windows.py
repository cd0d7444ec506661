"""Compiled (numba) kernels of the window resolution and of the builders' cells.

Imported lazily by :mod:`idq_common.science.features` on the first feature build, so a
process that never builds features (ingest, calibrate, the CLI) does not pay numba's
import (~0.4 s CPU). ``cache=True`` keeps the machine code in ``__pycache__`` (or the
user's cache when that is read-only): a new process loads it instead of compiling.

Every kernel does the same IEEE float64 operations, in the same order, as the numpy
expressions it replaces (no ``fastmath``: no reassociation, no fused multiply-add), so
the values are the same bit for bit; ``tests/common/test_features.py`` (a naive
per-sample reference) and ``tests/common/test_stride.py`` (every flavor's built input
against ``rank`` of the feature matrix) check it.
"""

from __future__ import annotations

import numba
import numpy as np


def _skip_blas_check() -> None:
    """Load numba's array implementations without its BLAS probe.

    On the first kernel call (compiled or loaded from the cache) numba registers its
    implementations, importing ``numba.np.arraymath``, which probes for BLAS by
    importing ``scipy.linalg`` (~0.3 CPU s, with scipy's array API layer): a stage
    that never imports scipy (evaluate) paid it for a BLAS no kernel here calls. The
    probe answers "no BLAS" while that module is imported (``np.dot`` and friends in
    jitted code would use numba's loops; none is used), and is restored at once for
    any later caller.
    """
    import sys

    if "numba.np.arraymath" in sys.modules:
        return
    try:
        from numba.np import linalg

        probe = linalg.ensure_blas
    except (ImportError, AttributeError):  # another numba: its own start-up, unchanged
        return

    def no_blas() -> None:
        raise ImportError("BLAS not probed: no idq kernel calls it")

    linalg.ensure_blas = no_blas
    try:
        import numba.np.arraymath  # noqa: F401 - registered now, without the probe
    finally:
        linalg.ensure_blas = probe


_skip_blas_check()

#: compiled once, the machine code cached on disk; no fastmath (bit-identical values);
#: numpy's error model: a float division is not checked for a zero divisor (every
#: divisor here is a window or a scale, > 0), so loops of divisions vectorize
_jit = numba.njit(cache=True, nogil=True, boundscheck=False, error_model="numpy")


@_jit
def group(
    chan: np.ndarray,
    col_of: np.ndarray,
    t: np.ndarray,
    s: np.ndarray,
    f: np.ndarray,
    nch: int,
    rows: np.ndarray,
    r0: int,
    r1: int,
    select: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """Rows grouped by spec channel ``col_of[chan[r]]`` (``nch``: not in the spec, dropped).

    The rows are ``rows`` (sorted indices) with ``select``, else ``r0 .. r1 - 1`` (read
    in place: no gathered copies of the columns). A stable counting sort: within a
    channel the rows keep their (time) order. Returns ``bounds`` (channel c owns rows
    ``[bounds[c], bounds[c + 1])``) and the grouped time, snr and frequency, each
    followed by one zero row per channel (the defaults a cell without a trigger
    picks: row ``bounds[nch] + c``).
    """
    n = rows.size if select else r1 - r0
    counts = np.zeros(nch + 1, dtype=np.int64)
    for m in range(n):
        r = rows[m] if select else r0 + m
        counts[col_of[chan[r]]] += 1
    bounds = np.empty(nch + 1, dtype=np.int64)
    bounds[0] = 0
    for c in range(nch):
        bounds[c + 1] = bounds[c] + counts[c]
    size = bounds[nch] + nch
    tg = np.zeros(size)
    sg = np.zeros(size)
    fg = np.zeros(size)
    pos = bounds[:nch].copy()
    for m in range(n):
        r = rows[m] if select else r0 + m
        c = col_of[chan[r]]
        if c < nch:
            k = pos[c]
            tg[k] = t[r]
            sg[k] = s[r]
            fg[k] = f[r]
            pos[c] = k + 1
    return bounds, tg, sg, fg


@_jit
def resolve(
    bounds: np.ndarray,
    t: np.ndarray,
    s: np.ndarray,
    f: np.ndarray,
    st: np.ndarray,
    w: float,
    best: np.ndarray,
    hit: np.ndarray,
    picked: np.ndarray,
) -> None:  # pragma: no cover - compiled; covered through build_features
    """Loudest grouped row of every window ``[st[i] - w, st[i] + w]`` of every channel.

    ``bounds`` (nch + 1): channel c owns grouped rows ``[bounds[c], bounds[c + 1])``
    in time order (:func:`group`); ``st`` sorted. Writes ``best[i, c]`` (the row;
    ``bounds[nch] + c``, the channel's default row, when the window is empty) and
    ``hit[i, c]``, and sets ``picked[r]`` (bool, one per grouped row and default row)
    for every row some cell picked (and the defaults), so a builder maps only those
    rows. One sliding-window maximum per channel: the window's edges only move
    forward and a deque keeps the candidate rows, best first, in the order "louder,
    then earlier, then lower frequency": a later row drops the rows it beats (louder,
    or as loud at the same time with a lower frequency), so the front is the loudest
    row, ties to the earliest then the lowest frequency (the module docstring of
    ``features``). A row is inside iff ``st[i] - w <= time <= st[i] + w`` (float64).
    """
    n = st.size
    nch = bounds.size - 1
    rows = bounds[nch]
    dq = np.empty(max(rows, 1), dtype=np.int64)
    for c in range(nch):
        b1 = bounds[c + 1]
        hi = bounds[c]  # next row to enter
        head = hi  # the deque is dq[head:tail], within the channel's own rows
        tail = hi
        nxt = t[hi] if hi < b1 else np.inf  # time of the next row to enter
        front = np.inf  # time of the picked row (inf: none)
        cur = rows + c
        got = False
        picked[cur] = True
        for i in range(n):
            top = st[i] + w
            bottom = st[i] - w
            # The pick changes only when a row enters or the picked row leaves; rows
            # behind the front are later, so they leave after it.
            if nxt <= top or front < bottom:
                while hi < b1 and t[hi] <= top:
                    v, th, fh = s[hi], t[hi], f[hi]
                    while tail > head:
                        b = dq[tail - 1]
                        if s[b] < v or (s[b] == v and t[b] == th and f[b] > fh):
                            tail -= 1
                        else:
                            break
                    dq[tail] = hi
                    tail += 1
                    hi += 1
                nxt = t[hi] if hi < b1 else np.inf
                while head < tail and t[dq[head]] < bottom:
                    head += 1
                if head < tail:
                    cur = dq[head]
                    front = t[cur]
                    got = True
                    picked[cur] = True
                else:
                    cur = rows + c
                    front = np.inf
                    got = False
            best[i, c] = cur
            hit[i, c] = got


#: what :func:`dt_cols` writes of a cell's ``dt`` (after the optional lag shift)
DT_RAW, DT_CLOSENESS, DT_SCALED, DT_SIGNED, DT_LAG_SNR = 0, 1, 2, 3, 4


@_jit
def gather_cols(
    values: np.ndarray, best: np.ndarray, chans: np.ndarray, out: np.ndarray, cols: np.ndarray
) -> None:  # pragma: no cover - compiled; covered through build_features
    """``out[:, cols[m]] = values[best[:, chans[m]]]`` (cast to ``out``'s dtype)."""
    n = best.shape[0]
    for i in range(n):
        for m in range(chans.size):
            out[i, cols[m]] = values[best[i, chans[m]]]


@_jit
def dt_cols(
    best: np.ndarray,
    hit: np.ndarray,
    t_rows: np.ndarray,
    times: np.ndarray,
    w: float,
    chans: np.ndarray,
    lags: np.ndarray,
    shift: bool,
    mode: int,
    p: np.ndarray,
    q: np.ndarray,
    values: np.ndarray,
    out: np.ndarray,
    cols: np.ndarray,
) -> None:  # pragma: no cover - compiled; covered through build_features
    """A ``dt`` derived column per channel ``chans[m]`` into ``out[:, cols[m]]``.

    ``dt = t_trig - t`` where the cell has a trigger, else ``w``; with ``shift``,
    ``w if dt >= w else dt - lags[m]`` (a missing trigger stays missing); then by
    ``mode``: the value itself, the closeness ``1 - min(|dt| / w, 1)``, the closeness
    scaled ``(x - p[m]) / q[m]`` (a scaler's mean and scale), the signed
    ``clip(dt / w, -1, 1)``, or ``lag_snr``: the picked row's ``values`` (its log snr)
    where ``|dt| <= p[m]`` (a tolerance), else 0. The numpy expressions of
    ``classifiers/sklearn.py``, operation for operation.
    """
    n = best.shape[0]
    for i in range(n):
        ti = times[i]
        for m in range(chans.size):
            c = chans[m]
            dt = t_rows[best[i, c]] - ti if hit[i, c] else w
            if shift:
                dt = w if dt >= w else dt - lags[m]
            if mode == DT_RAW:
                x = dt
            elif mode == DT_LAG_SNR:
                x = values[best[i, c]] if abs(dt) <= p[m] else 0.0
            elif mode == DT_SIGNED:
                x = dt / w
                x = -1.0 if x < -1.0 else (1.0 if x > 1.0 else x)
            else:
                r = abs(dt) / w
                x = 1.0 - (r if r < 1.0 else 1.0)
                if mode == DT_SCALED:
                    x = (x - p[m]) / q[m]
            out[i, cols[m]] = x


@_jit
def forest_sum(
    X: np.ndarray,
    roots: np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
    feature: np.ndarray,
    threshold: np.ndarray,
    nan_left: np.ndarray,
    leaf: np.ndarray,
    out: np.ndarray,
) -> None:  # pragma: no cover - compiled; covered through the forest's rank
    """``out[i] = sum over trees, in order, of the leaf value row i reaches``.

    The trees' nodes concatenated (children as global node indices, -1 at a leaf);
    a node sends a row left iff its float32 feature, promoted to float64, is ``<=`` the
    threshold, a NaN by ``nan_left``: scikit-learn's ``Tree.apply`` on a float32 matrix.
    Sums from 0.0 in tree order, as ``predict_proba``'s accumulation.
    """
    n = X.shape[0]
    for i in range(n):
        out[i] = 0.0
    for k in range(roots.size):
        root = roots[k]
        for i in range(n):
            node = root
            while left[node] != -1:
                x = X[i, feature[node]]
                if np.isnan(x):
                    node = left[node] if nan_left[node] else right[node]
                elif x <= threshold[node]:
                    node = left[node]
                else:
                    node = right[node]
            out[i] += leaf[node]


@_jit
def matrix_cells(
    best: np.ndarray,
    hit: np.ndarray,
    t_rows: np.ndarray,
    times: np.ndarray,
    w: float,
    lags: np.ndarray,
    shift: bool,
    rowvals: np.ndarray,
    kinds: np.ndarray,
    mode: int,
    p: np.ndarray,
    q: np.ndarray,
    out: np.ndarray,
) -> None:  # pragma: no cover - compiled; covered through build_features
    """A channel-major matrix of every channel, ``k = kinds.size`` columns each.

    Column ``j`` of channel ``c`` is ``out[:, c * k + j]``: ``rowvals[kinds[j]]`` of the
    picked row when ``kinds[j] >= 0``, else the channel's ``dt`` column as
    :func:`dt_cols` makes it in ``mode`` (``p``/``q`` per channel). One pass over the
    picks for all columns, instead of one per column.
    """
    n, nch = best.shape
    k = kinds.size
    for i in range(n):
        ti = times[i]
        for c in range(nch):
            b = best[i, c]
            for j in range(k):
                src = kinds[j]
                if src >= 0:
                    out[i, c * k + j] = rowvals[src, b]
                    continue
                dt = t_rows[b] - ti if hit[i, c] else w
                if shift:
                    dt = w if dt >= w else dt - lags[c]
                if mode == DT_RAW:
                    x = dt
                else:
                    r = abs(dt) / w
                    x = 1.0 - (r if r < 1.0 else 1.0)
                    if mode == DT_SCALED:
                        x = (x - p[c]) / q[c]
                out[i, c * k + j] = x


@_jit
def linear_cells(
    best: np.ndarray,
    hit: np.ndarray,
    t_rows: np.ndarray,
    times: np.ndarray,
    w: float,
    lags: np.ndarray,
    shift: bool,
    rowprods: np.ndarray,
    kinds: np.ndarray,
    p: np.ndarray,
    q: np.ndarray,
    coef: np.ndarray,
    out: np.ndarray,
) -> None:  # pragma: no cover - compiled; covered through build_features
    """``out[i] = einsum("ij,j->i", M, weights)[i]`` of the matrix ``M`` that
    :func:`matrix_cells` makes in ``DT_SCALED`` mode, without making it.

    ``rowprods[kinds[j]]`` holds, per grouped row, a non-``dt`` column's cell already
    multiplied by its weight (the same product as per cell: one rounding either way);
    a ``dt`` column's cell is scaled as in :func:`matrix_cells` (``p``/``q`` per
    channel) and multiplied by ``coef[c]``. The products are summed in the order of
    numpy's einsum for a C-contiguous float64 matrix (its inner loop
    ``sum_of_products_contig_contig_outstride0_two``, baseline SSE: two float64 lanes,
    no fused multiply-add): two accumulators, even and odd columns; blocks of 8 columns
    added from the last pair to the first; a tail pair by pair, a missing odd column
    adding 0.0; the even lane plus the odd one. ``tests/common/test_stride.py`` checks
    the ranks against ``einsum`` of the matrix, bit for bit.

    Four samples at a time: their rows are made in an L1-sized buffer (the ``dt``
    cells of a sample in a loop over channels that the compiler vectorizes), then
    summed together, so eight independent chains of additions hide their latency.
    """
    n, nch = best.shape
    k = kinds.size
    m = nch * k
    rows = np.zeros((4, m))
    dtv = np.empty(nch)
    for i0 in range(0, n, 4):
        nb = min(4, n - i0)
        for s in range(nb):
            i = i0 + s
            ti = times[i]
            bi = best[i]
            hi = hit[i]
            row = rows[s]
            for c in range(nch):
                dt = t_rows[bi[c]] - ti if hi[c] else w
                if shift:
                    dt = w if dt >= w else dt - lags[c]
                dtv[c] = dt
            for c in range(nch):
                r = abs(dtv[c]) / w
                x = 1.0 - (r if r < 1.0 else 1.0)
                dtv[c] = ((x - p[c]) / q[c]) * coef[c]
            for j in range(k):
                src = kinds[j]
                if src >= 0:
                    pr = rowprods[src]
                    for c in range(nch):
                        row[c * k + j] = pr[bi[c]]
                else:
                    for c in range(nch):
                        row[c * k + j] = dtv[c]
        r0, r1, r2, r3 = rows[0], rows[1], rows[2], rows[3]
        a0 = a1 = b0 = b1 = c0 = c1 = d0 = d1 = 0.0
        j = 0
        while m - j >= 8:
            for u in (6, 4, 2, 0):
                a0 = r0[j + u] + a0
                a1 = r0[j + u + 1] + a1
                b0 = r1[j + u] + b0
                b1 = r1[j + u + 1] + b1
                c0 = r2[j + u] + c0
                c1 = r2[j + u + 1] + c1
                d0 = r3[j + u] + d0
                d1 = r3[j + u + 1] + d1
            j += 8
        while j < m:
            a0 = r0[j] + a0
            b0 = r1[j] + b0
            c0 = r2[j] + c0
            d0 = r3[j] + d0
            odd = j + 1 < m
            a1 = (r0[j + 1] if odd else 0.0) + a1
            b1 = (r1[j + 1] if odd else 0.0) + b1
            c1 = (r2[j + 1] if odd else 0.0) + c1
            d1 = (r3[j + 1] if odd else 0.0) + d1
            j += 2
        out[i0] = a0 + a1
        if nb > 1:
            out[i0 + 1] = b0 + b1
        if nb > 2:
            out[i0 + 2] = c0 + c1
        if nb > 3:
            out[i0 + 3] = d0 + d1


@_jit
def scaled_rows(
    values: np.ndarray,
    rows: np.ndarray,
    chan: np.ndarray,
    mean: np.ndarray,
    scale: np.ndarray,
    coef: np.ndarray,
    out: np.ndarray,
) -> None:  # pragma: no cover - compiled; covered through build_features
    """``out[r] = ((values[r] - mean[c]) / scale[c]) * coef[c]``, ``c = chan[r]``, for
    the rows ``rows``: a scaler's ``(z - mean) / scale`` then a linear weight, the
    numpy expressions of ``LinearScore`` per row (three correctly rounded operations)."""
    for m in range(rows.size):
        r = rows[m]
        c = chan[r]
        out[r] = ((values[r] - mean[c]) / scale[c]) * coef[c]


#: every compiled kernel (what :func:`warm` compiles)
KERNELS = (
    group,
    resolve,
    gather_cols,
    dt_cols,
    matrix_cells,
    linear_cells,
    scaled_rows,
    forest_sum,
)


def warm() -> int:
    """Compile (or load from the cache) every kernel for the argument types the feature
    builders and the forest pass; returns the number of signatures now compiled.

    A service pays this on its first stride anyway; the benchmarks call it first so no
    measured process pays a compile (about 1.5-2 s CPU the first time on a machine or
    after this file changed; loading cached code is ~0.2 s).
    """
    i8, f8 = np.int64, np.float64
    best = np.zeros((2, 1), dtype=i8)
    hit = np.zeros((2, 1), dtype=bool)
    one, two = np.zeros(1, dtype=i8), np.zeros(2)
    row = np.zeros(1)
    chan = np.zeros(1, dtype=np.int32)
    bounds, t, s, f = group(chan, np.zeros(2, dtype=i8), row, row, row, 1, one, 0, 1, False)
    resolve(bounds, t, s, f, two, 0.1, best, hit, np.zeros(t.size, dtype=bool))
    for dtype in (np.float64, np.float32):
        out = np.zeros((2, 1), dtype=dtype)
        gather_cols(np.zeros(1), best, one, out, one)
        dt_cols(
            best,
            hit,
            np.zeros(1),
            two,
            0.1,
            one,
            np.zeros(1),
            False,
            DT_RAW,
            np.zeros(1),
            np.ones(1),
            np.zeros(1),
            out,
            one,
        )
    matrix_cells(
        best,
        hit,
        np.zeros(1),
        two,
        0.1,
        np.zeros(1),
        False,
        np.zeros((1, 1)),
        np.zeros(1, dtype=i8),
        DT_RAW,
        np.zeros(1),
        np.ones(1),
        np.zeros((2, 1)),
    )
    linear_cells(
        best,
        hit,
        np.zeros(1),
        two,
        0.1,
        np.zeros(1),
        False,
        np.zeros((1, 1)),
        np.zeros(1, dtype=i8),
        np.zeros(1),
        np.ones(1),
        np.zeros(1),
        np.zeros(2),
    )
    scaled_rows(np.zeros(1), one, one, np.zeros(1), np.ones(1), np.zeros(1), np.zeros(1))
    leaf = np.zeros(1, dtype=f8)
    minus = np.full(1, -1, dtype=i8)
    forest_sum(
        np.zeros((2, 1), dtype=np.float32),
        np.zeros(1, dtype=i8),
        minus,
        minus,
        one,
        leaf,
        np.ones(1, dtype=bool),
        leaf,
        np.zeros(2),
    )
    return sum(len(k.signatures) for k in KERNELS)
