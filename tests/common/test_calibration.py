"""CalibrationMap: coverage of FAP on held-out clean samples, monotonicity, storage."""

from __future__ import annotations

import math

import numpy as np
import pytest

from idq_common.exceptions import CalibrationError
from idq_common.science.calibration import CalibrationMap, select_bandwidth

N_FIT, N_HELD = 20_000, 10_000


def _coverage_ok(frac: float, p: float, n: int) -> bool:
    return abs(frac - p) <= 3 * math.sqrt(p * (1 - p) / n)


def _draw(rng: np.random.Generator, kind: str, n: int, glitch: bool) -> np.ndarray:
    if kind == "continuous":
        return rng.beta(5, 2, n) if glitch else rng.beta(1, 8, n)
    if kind == "pile_at_zero":  # forest-like: most clean samples exactly 0
        cont = rng.beta(4, 2, n) if glitch else rng.beta(1, 6, n)
        zero = rng.random(n) < (0.1 if glitch else 0.7)
        return np.where(zero, 0.0, cont)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["continuous", "pile_at_zero"])
def test_fap_is_calibrated_on_held_out_clean(kind: str) -> None:
    rng = np.random.default_rng(11)
    cmap = CalibrationMap.fit(_draw(rng, kind, 3000, True), _draw(rng, kind, N_FIT, False))
    held = _draw(rng, kind, N_HELD, False)
    fap = cmap.fap(held)
    for p in (0.1, 0.01):
        frac = float(np.mean(fap <= p))
        assert _coverage_ok(frac, p, N_HELD), (kind, p, frac)


def test_discrete_ranks_are_conservative() -> None:
    """OVL-like atoms: FAP stays a valid p-value (never more false alarms than p)."""
    rng = np.random.default_rng(12)
    levels = np.array([0.0, 0.5, 0.8, 0.9, 0.97, 0.99])
    clean_p = np.array([0.9, 0.05, 0.03, 0.015, 0.004, 0.001])
    glitch_p = np.array([0.3, 0.1, 0.2, 0.2, 0.1, 0.1])
    cmap = CalibrationMap.fit(
        rng.choice(levels, 2000, p=glitch_p), rng.choice(levels, N_FIT, p=clean_p)
    )
    held = rng.choice(levels, N_HELD, p=clean_p)
    for p in (0.1, 0.05, 0.01):
        frac = float(np.mean(cmap.fap(held) <= p))
        assert frac <= p + 3 * math.sqrt(p * (1 - p) / N_HELD)
    # at an atom the FAP counts the whole atom (ties included)
    assert cmap.fap(0.97) == pytest.approx((0.005 * N_FIT + 1) / (N_FIT + 1), rel=0.1)
    assert np.all(np.isfinite(cmap.loglike(levels)))
    assert cmap.loglike(0.99) > 0 > cmap.loglike(0.0)


def test_monotone_bounded_and_consistent() -> None:
    rng = np.random.default_rng(13)
    g, c = rng.beta(5, 2, 2000), rng.beta(1, 8, 5000)
    cmap = CalibrationMap.fit(g, c, grid_points=501)
    assert cmap.grid.size <= 501 and cmap.grid[0] == 0.0 and cmap.grid[-1] == 1.0
    r = np.linspace(0, 1, 10_001)
    fap, eff = cmap.fap(r), cmap.eff(r)
    assert np.all(np.diff(fap) <= 0) and np.all(np.diff(eff) <= 0)
    assert fap[0] == 1.0 and eff[0] == 1.0
    assert fap.min() >= 1 / (c.size + 1)
    ll, pg = cmap.loglike(r), cmap.pglitch(r)
    assert np.all(np.isfinite(ll)) and np.all((pg >= 0) & (pg <= 1))
    assert ll[-1] > 0 > ll[0]
    # FAP at clean-sample ranks matches the empirical survival (the estimator's definition)
    at = np.quantile(c, [0.5, 0.9, 0.99])
    for q, a in zip([0.5, 0.9, 0.99], at, strict=True):
        assert cmap.fap(a) == pytest.approx(1 - q, abs=0.002)
    # the density ratio tracks the true one (beta(5,2) / beta(1,8)) in the bulk
    from scipy.stats import beta

    mid = np.array([0.3, 0.5])
    true = beta(5, 2).logpdf(mid) - beta(1, 8).logpdf(mid)
    assert np.allclose(cmap.loglike(mid), true, atol=0.5)
    assert ok_tuple(cmap.health())


def ok_tuple(h: tuple[bool, str]) -> bool:
    return h[0] is True and h[1] == "ok"


def test_prior_odds_from_rates() -> None:
    rng = np.random.default_rng(14)
    g, c = rng.beta(5, 2, 500), rng.beta(1, 8, 5000)
    even = CalibrationMap.fit(g, c, glitch_rate=1.0, clean_rate=1.0)
    r = np.array([0.1, 0.5, 0.9])
    assert np.allclose(even.pglitch(r), 1 / (1 + np.exp(-even.loglike(r))))
    default = CalibrationMap.fit(g, c)
    assert default.prior_log_odds == pytest.approx(math.log(500 / 5000))
    assert np.all(default.pglitch(r) < even.pglitch(r))
    with pytest.raises(CalibrationError):
        CalibrationMap.fit(g, c, glitch_rate=1.0)


def test_bandwidth_selection() -> None:
    rng = np.random.default_rng(15)
    h = select_bandwidth(rng.beta(2, 5, 20_000))
    assert 0.005 < h < 0.1
    # ties do not drive the bandwidth to zero (leave-one-bin-out)
    tied = np.r_[np.zeros(15_000), rng.beta(2, 5, 5_000)]
    assert select_bandwidth(tied) > 0.005
    fixed = CalibrationMap.fit(rng.random(100), rng.random(100), bandwidth=0.03)
    assert fixed.bandwidth_glitch == fixed.bandwidth_clean == 0.03


def test_json_round_trip_and_id() -> None:
    rng = np.random.default_rng(16)
    g, c = rng.beta(5, 2, 500), rng.beta(1, 8, 2000)
    cmap = CalibrationMap.fit(g, c)
    back = CalibrationMap.from_json(cmap.to_json())
    r = rng.random(1000)
    for f in ("fap", "eff", "loglike", "pglitch"):
        assert np.array_equal(getattr(back, f)(r), getattr(cmap, f)(r))
    assert back.id == cmap.id == CalibrationMap.from_bytes(cmap.to_bytes()).id
    assert CalibrationMap.fit(g, c).id == cmap.id  # content-derived, deterministic
    assert CalibrationMap.fit(g[:-1], c).id != cmap.id
    tampered = cmap.to_json().replace('"n_clean": 2000', '"n_clean": 2001')
    with pytest.raises(CalibrationError, match="id mismatch"):
        CalibrationMap.from_json(tampered)
    with pytest.raises(CalibrationError):
        CalibrationMap.from_json('{"format": "other"}')


def test_health_and_bad_input() -> None:
    rng = np.random.default_rng(17)
    small = CalibrationMap.fit(rng.random(10), rng.random(1000), min_samples=50)
    ok, reason = small.health()
    assert not ok and "glitch" in reason
    assert small.health(min_samples=5)[0]
    with pytest.raises(CalibrationError, match="no glitch"):
        CalibrationMap.fit([], [0.1])
    with pytest.raises(CalibrationError, match="NaN"):
        CalibrationMap.fit([0.1, np.nan], [0.1])


def _bandwidth_by_kernel_matrix(ranks: np.ndarray) -> float:
    """The selection written out with the full reflected kernel matrix between bins."""
    from idq_common.science.calibration import _SEL_BINS, BANDWIDTHS, _kernel

    n = ranks.size
    idx = np.minimum((ranks * _SEL_BINS).astype(np.int64), _SEL_BINS - 1)
    counts = np.bincount(idx, minlength=_SEL_BINS).astype(np.float64)
    keep = counts > 0
    m, x = counts[keep], ((np.arange(_SEL_BINS) + 0.5) / _SEL_BINS)[keep]
    best, best_ll = float(BANDWIDTHS[-1]), -np.inf
    for h in BANDWIDTHS:
        K = _kernel(x, x, float(h))
        others = (K @ m - np.diag(K) * m) / (n - m)
        ll = float(np.sum(m * np.log(np.maximum(others, 1e-300))))
        if ll > best_ll:
            best, best_ll = float(h), ll
    return best


@pytest.mark.parametrize("n", [12, 300, 5000])
def test_bandwidth_by_convolution_is_the_kernel_matrix_choice(n: int) -> None:
    rng = np.random.default_rng(n)
    draws = [
        rng.beta(2, 5, n),
        np.where(rng.random(n) < 0.7, 0.0, rng.random(n)),  # a pile at 0 (OVL-like)
        rng.choice([0.0, 0.1, 0.35, 1.0], n),  # a few atoms
        rng.random(n) ** 8,  # squeezed towards 0
        np.clip(rng.normal(0.9, 0.05, n), 0.0, 1.0),  # near 1 (the mirror)
    ]
    for ranks in draws:
        assert select_bandwidth(ranks) == _bandwidth_by_kernel_matrix(ranks)
