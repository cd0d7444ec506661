"""Per-channel lags and jitters: the grouped computation equals numpy's median and
quantile per channel, bit for bit (they are stored with every model: its id)."""

from __future__ import annotations

import numpy as np
import pytest

from idq_common.science.classifiers.lags import channel_lags, lag_tolerances

W = 0.5


def _reference_lags(snr, dt, y, window, bin_width, snr_min, min_excess):  # type: ignore[no-untyped-def]
    """The per-channel loop channel_lags replaced (np.median of each channel's group)."""
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
    for c in np.nonzero(strong)[0]:
        sel = glitch & (chan == c) & (np.abs(bins - best[c]) <= 1)
        lags[c] = round(float(np.median(d[sel])), 4)
    return lags


def _reference_tol(snr, dt, y, lags, near, floor, quantile, min_count=5):  # type: ignore[no-untyped-def]
    at = (snr > 0) & (np.abs(dt - lags[None, :]) <= near) & (y == 1)[:, None]
    tol = np.full(snr.shape[1], float(near))
    for c in np.nonzero(at.sum(axis=0) >= min_count)[0]:
        d = np.abs(dt[at[:, c], c] - lags[c])
        tol[c] = max(float(floor), round(float(np.quantile(d, quantile)), 4))
    return tol


def _features(seed: int, n: int, nch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    snr = np.where(rng.random((n, nch)) < 0.5, rng.uniform(5.5, 20, (n, nch)), 0.0)
    dt = np.where(snr > 0, rng.uniform(-W, W, (n, nch)), W)
    y = (rng.random(n) < 0.3).astype(np.int8)
    # witnesses at a lag with jitter, and coarse values so medians tie and groups are even
    for c in range(0, nch, 7):
        g = y == 1
        snr[g, c] = 8.0
        dt[g, c] = np.round(0.1 + rng.normal(0, 0.02, g.sum()), 3 if c % 2 else 6)
    return snr, dt, y


@pytest.mark.parametrize("seed", range(6))
def test_lags_and_jitters_equal_numpy_per_channel(seed: int) -> None:
    snr, dt, y = _features(seed, 300 + 97 * seed, 60)
    for min_excess in (3, 1):
        lags = channel_lags(snr, dt, y, W, W / 8, 1e-300, min_excess)
        want = _reference_lags(snr, dt, y, W, W / 8, 1e-300, min_excess)
        assert lags.view(np.int64).tolist() == want.view(np.int64).tolist()
    for q in (0.9, 0.5, 0.0, 1.0, 0.37):
        got = lag_tolerances(snr, dt, y, lags, 0.2 * W, 0.04 * W, q)
        want = _reference_tol(snr, dt, y, lags, 0.2 * W, 0.04 * W, q)
        assert got.view(np.int64).tolist() == want.view(np.int64).tolist()
