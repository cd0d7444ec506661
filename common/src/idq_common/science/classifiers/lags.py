"""Per-channel witness lags, learnt from a labelled feature matrix.

A witness may respond to a glitch with a delay (a control loop, a seismic path, a
filter), so its trigger sits at ``dt = lag +- jitter`` from the glitch rather than at 0.
A feature row holds ``dt`` of the loudest trigger in the window; this module finds,
per channel, the ``dt`` where the channel's glitch-sample triggers stand out over its
clean-sample triggers. OVL centres its veto windows on it; the scikit-learn flavors
(``lags = true``) measure their closeness feature from it (``|dt - lag|`` instead of
``|dt|``), so one tree split separates a delayed witness from background.
"""

from __future__ import annotations

import numpy as np

__all__ = ["channel_lags", "lag_tolerances", "witness_channels"]


def channel_lags(
    snr: np.ndarray,
    dt: np.ndarray,
    y: np.ndarray,
    window: float,
    bin_width: float,
    snr_min: float,
    min_excess: int,
) -> np.ndarray:
    """Per channel, the lag of its triggers behind glitches (0 where none stands out).

    The ``dt`` of triggers with ``snr >= snr_min`` is histogrammed in bins of
    ``bin_width`` over ``[-window, window]``, for glitch and for clean samples; the bin
    where the glitch fraction most exceeds the clean fraction, if that excess is at
    least ``min_excess`` glitches, gives the lag: the median ``dt`` of the glitch
    triggers within one bin of it (rounded to 0.1 ms, so it prints and stores exactly).

    Parameters
    ----------
    snr, dt : numpy.ndarray
        ``(samples, channels)`` feature columns (snr 0 = no trigger).
    y : numpy.ndarray
        Labels, 1 = glitch, 0 = clean.
    window : float
        Feature window half-width (s).
    bin_width : float
        Histogram bin (s): about the jitter one expects of a witness.
    snr_min : float
        Triggers below it are not counted.
    min_excess : int
        Glitches by which the best bin must beat the clean rate for a lag to be kept.

    Returns
    -------
    numpy.ndarray
        ``(channels,)`` lags in s.
    """
    n_chan = snr.shape[1]
    lags = np.zeros(n_chan)
    nb = max(1, int(np.ceil(2 * window / bin_width)))
    sample, chan = np.nonzero(snr >= snr_min)
    d = dt[sample, chan]
    bins = np.clip(((d + window) / bin_width).astype(np.int64), 0, nb - 1)
    glitch = y[sample] == 1
    n_g, n_c = max(int((y == 1).sum()), 1), max(int((y == 0).sum()), 1)
    hg = np.bincount(chan[glitch] * nb + bins[glitch], minlength=n_chan * nb)
    hc = np.bincount(chan[~glitch] * nb + bins[~glitch], minlength=n_chan * nb)
    excess = hg.reshape(n_chan, nb) / n_g - hc.reshape(n_chan, nb) / n_c
    best = np.argmax(excess, axis=1)
    strong = excess[np.arange(n_chan), best] * n_g >= min_excess
    chosen = np.nonzero(strong)[0]
    if not len(chosen):
        return lags
    # the glitch triggers within one bin of their channel's best, grouped by channel
    # with one stable sort (a mask over every trigger per strong channel was
    # O(channels x triggers): 8 s of a 1,000-channel training round, where noise
    # channels pass min_excess by chance); each channel's values keep their order
    near = glitch & strong[chan] & (np.abs(bins - best[chan]) <= 1)
    values, lo, n = _sorted_groups(chan[near], d[near], chosen)
    # np.median of each group (one call per channel was ~0.1 s per round at 1,000
    # channels): the middle value, or the mean of the middle two, (a + b) / 2
    mid = lo + n // 2
    even = n % 2 == 0
    med = values[np.minimum(mid, values.size - 1)] if values.size else np.zeros(n.size)
    if even.any():
        med = np.where(even, (values[np.maximum(mid - 1, 0)] + med) / 2, med)
    med = np.where(n > 0, med, np.nan)  # np.median of nothing (min_excess <= 0 only)
    for c, m in zip(chosen.tolist(), med.tolist(), strict=True):
        lags[c] = round(m, 4)
    return lags


def _sorted_groups(
    chan: np.ndarray, values: np.ndarray, chosen: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``values`` sorted by (channel, value); each chosen channel's first index and count.

    Every chosen channel must have at least one value.
    """
    order = np.lexsort((values, chan))
    c, v = chan[order], values[order]
    lo = np.searchsorted(c, chosen, side="left")
    hi = np.searchsorted(c, chosen, side="right")
    return v, lo, hi - lo


def _near(snr: np.ndarray, dt: np.ndarray, lags: np.ndarray, near: float) -> np.ndarray:
    """Cells holding a trigger within ``near`` of the channel's lag."""
    return (snr > 0) & (np.abs(dt - lags[None, :]) <= near)


def witness_channels(
    snr: np.ndarray,
    dt: np.ndarray,
    y: np.ndarray,
    lags: np.ndarray,
    near: float,
    z: float,
    min_excess: int,
) -> np.ndarray:
    """Channels whose triggers sit at their lag more often for glitches than for clean.

    Per channel, ``n`` glitch samples have a trigger within ``near`` of the lag; clean
    samples give the expected count ``m = n_glitch * p_clean``. The channel is kept
    when ``n - m >= z * sqrt(m + 1)`` (a Poisson excess of ``z`` sigma, the ``+ 1``
    keeps a channel that never fires on clean samples from passing on one glitch)
    and ``n - m >= min_excess``. With hundreds of channels and a few witnesses, a
    forest that samples ``sqrt`` of its columns per split mostly sees noise channels;
    dropping them before fitting is what lets it find rare families' witnesses.

    Returns
    -------
    numpy.ndarray
        ``(channels,)`` bool.
    """
    at = _near(snr, dt, lags, near)
    g, c = y == 1, y == 0
    n_g = int(g.sum())
    n = at[g].sum(axis=0).astype(np.float64)
    m = n_g * (at[c].mean(axis=0) if c.any() else np.zeros(at.shape[1]))
    excess = n - m
    return (excess >= z * np.sqrt(m + 1.0)) & (excess >= min_excess)


def lag_tolerances(
    snr: np.ndarray,
    dt: np.ndarray,
    y: np.ndarray,
    lags: np.ndarray,
    near: float,
    floor: float,
    quantile: float,
    min_count: int = 5,
) -> np.ndarray:
    """Per channel, how far from its lag a witness trigger lands (its jitter).

    The ``quantile`` of ``|dt - lag|`` over glitch-sample triggers within ``near`` of
    the lag (at least ``min_count`` of them, else ``near``), never below ``floor``.
    """
    at = _near(snr, dt, lags, near) & (y == 1)[:, None]
    tol = np.full(snr.shape[1], float(near))
    chosen = np.nonzero(at.sum(axis=0) >= min_count)[0]
    if not chosen.size:
        return tol
    sample, chan = np.nonzero(at)
    values, lo, n = _sorted_groups(chan, np.abs(dt[sample, chan] - lags[chan]), chosen)
    # np.quantile(d, quantile) of each group ("linear", numpy's arithmetic: the virtual
    # index (n - 1) * q, its floor and the lerp from the nearer end; one call per
    # channel was ~0.2 s per round at 1,000 channels); n >= min_count >= 1
    virtual = (n - 1) * float(quantile)
    prev = np.floor(virtual)
    gamma = virtual - prev
    i = lo + prev.astype(np.int64)
    a = values[i]
    b = values[np.minimum(i + 1, lo + n - 1)]
    diff = b - a
    q = np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)
    for c, v in zip(chosen.tolist(), q.tolist(), strict=True):
        tol[c] = max(float(floor), round(v, 4))
    return tol
