"""Calibration: ranks -> FAP, EFF, LOGLIKE, PGLITCH.

:meth:`CalibrationMap.fit` takes the ranks of glitch samples and of clean samples.

**FAP and EFF come from the empirical survival functions, not from the KDE cdf.**
``FAP(r) = (#{clean >= r} + 1) / (n_clean + 1)`` is the conformal p-value: for a new
clean sample exchangeable with the calibration set, ``P(FAP(R) <= p) <= p`` exactly,
whatever the rank distribution, *including ties*.  Ties matter: OVL gives rank exactly 0
to most samples and a handful of discrete levels to the rest; forests give exact 0 and 1.
A KDE cdf splits an atom in half around its value, so at the atom it reports half the
true tail mass (anti-conservative exactly where alerts are raised), and its tail beyond
the loudest clean sample falls to ~0 (a FAP no data supports).  The ``+1`` is the
small-sample floor: no FAP below ``1 / (n_clean + 1)`` is claimed.
``EFF(r) = #{glitch >= r} / n_glitch`` (plain fraction: an estimate, not a p-value).

Smoothness comes from the grid: values are stored at ``grid_points`` nodes and read
with ``np.interp`` (continuous, piecewise linear, monotone non-increasing).  The nodes
are not uniform: a third are uniform on [0, 1], a third are clean-rank quantiles at
log-spaced survival levels (resolving FAP down to 1/n_clean wherever the classifier
puts its clean ranks, even if they are squeezed into [0, 0.01]), and a third are glitch
quantiles.  Quantile nodes are sample values, so every atom is a node and a rank at an
atom reads its exact, tie-inclusive value.

**LOGLIKE and PGLITCH come from two Gaussian KDEs** over rank with reflecting boundaries
at 0 and 1 (each sample is mirrored about 0 and 1, so no mass leaks out and a pile at 0
gives a half-Gaussian, not a divergence).  One pseudo-sample spread uniformly over
[0, 1] is added to each density so the log ratio stays finite where a class has no
data.  The bandwidth of each KDE is fixed, chosen on a log grid by *leave-one-bin-out*
likelihood: ranks are binned at 0.002, and each bin is scored by the density of all the
*other* bins.  Plain leave-one-out picks a vanishing bandwidth as soon as samples tie
(a copy of every tied sample is left in); leaving the whole bin out is immune to ties and
differs from leave-one-out by a bin width, far below the bandwidths considered
(0.005 .. 0.5; production settles near 0.03).

``PGLITCH = 1 / (1 + exp(-(LOGLIKE + log(glitch_rate / clean_rate))))``; without rates
the prior odds are the sample ratio ``n_glitch / n_clean``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from idq_common.exceptions import CalibrationError

_FORMAT = "idq-calibration-1"
_SEL_BINS = 500  # bins for bandwidth selection (width 0.002)
_KDE_BINS = 2000  # bins for density evaluation when ranks are many and distinct
BANDWIDTHS = np.logspace(np.log10(0.005), np.log10(0.5), 31)


def _kernel(x: np.ndarray, centers: np.ndarray, h: float) -> np.ndarray:
    """Reflected Gaussian kernel matrix, shape (len(x), len(centers))."""
    x = x[:, None]
    c = centers[None, :]
    z = np.exp(-0.5 * ((x - c) / h) ** 2)
    z += np.exp(-0.5 * ((x + c) / h) ** 2)  # mirror about 0
    z += np.exp(-0.5 * ((x - (2.0 - c)) / h) ** 2)  # mirror about 1
    return z / (h * np.sqrt(2.0 * np.pi))


def _compress(r: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """(values, counts): exact unique values when few, else bin centres."""
    values, counts = np.unique(r, return_counts=True)
    if values.size <= bins:
        return values, counts.astype(np.float64)
    idx = np.minimum((r * bins).astype(np.int64), bins - 1)
    counts = np.bincount(idx, minlength=bins).astype(np.float64)
    keep = counts > 0
    return ((np.arange(bins) + 0.5) / bins)[keep], counts[keep]


def select_bandwidth(ranks: np.ndarray, bandwidths: np.ndarray = BANDWIDTHS) -> float:
    """Bandwidth maximising the leave-one-bin-out log-likelihood (module docstring).

    The bins are a regular grid, so the reflected kernel between bins ``i`` and ``j``
    is a function of ``i - j`` (direct term) and ``i + j`` (the mirrors about 0 and 1):
    the density of every bin is one convolution and one correlation of the bin counts
    with kernels tabulated once per bandwidth, not a kernel matrix of exponentials
    (about 8x faster; the same bandwidth is chosen).
    """
    n = ranks.size
    if n < 5:
        return 0.03  # too few samples to choose; the production value
    idx = np.minimum((ranks * _SEL_BINS).astype(np.int64), _SEL_BINS - 1)
    counts = np.bincount(idx, minlength=_SEL_BINS).astype(np.float64)
    keep = np.flatnonzero(counts > 0)
    m = counts[keep]
    if m.size < 2:
        return float(bandwidths[0])
    diff = np.arange(-(_SEL_BINS - 1), _SEL_BINS) / _SEL_BINS  # x_i - x_j
    total = np.arange(1, 2 * _SEL_BINS) / _SEL_BINS  # x_i + x_j
    at = keep + _SEL_BINS - 1  # bin i in the full convolutions
    best, best_ll = float(bandwidths[-1]), -np.inf
    for h in bandwidths:
        h = float(h)
        near = np.exp(-0.5 * (diff / h) ** 2)
        mirrored = np.exp(-0.5 * (total / h) ** 2) + np.exp(-0.5 * ((total - 2.0) / h) ** 2)
        density = np.convolve(counts, near)[at] + np.convolve(counts[::-1], mirrored)[at]
        own = near[_SEL_BINS - 1] + mirrored[2 * keep]  # a bin's kernel with itself
        others = (density - own * m) / (h * np.sqrt(2.0 * np.pi)) / (n - m)
        ll = float(np.sum(m * np.log(np.maximum(others, 1e-300))))
        if ll > best_ll:
            best, best_ll = h, ll
    return best


def _survival(sorted_r: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """#{r >= node} for each node (ties included)."""
    return sorted_r.size - np.searchsorted(sorted_r, nodes, side="left")


def _nodes(glitch: np.ndarray, clean: np.ndarray, grid_points: int) -> np.ndarray:
    q = max(grid_points // 3, 1)
    uniform = np.linspace(0.0, 1.0, max(grid_points - 2 * q, 2))
    levels = np.logspace(0.0, np.log10(1.0 / clean.size), q) if clean.size > 1 else [1.0]
    clean_q = np.quantile(clean, 1.0 - np.asarray(levels), method="inverted_cdf")
    glitch_q = np.quantile(glitch, np.linspace(0.0, 1.0, q), method="inverted_cdf")
    return np.unique(np.concatenate([uniform, clean_q, glitch_q]))


def _clean_ranks(r: Any, what: str) -> np.ndarray:
    a = np.asarray(r, dtype=np.float64).ravel()
    if a.size == 0:
        raise CalibrationError(f"no {what} ranks to calibrate with")
    if not np.all(np.isfinite(a)):
        raise CalibrationError(f"{what} ranks hold NaN or inf")
    return np.clip(a, 0.0, 1.0)


class CalibrationMap:
    """Rank -> FAP, EFF, LOGLIKE, PGLITCH on a stored grid (use :meth:`fit`).

    Attributes are plain float64 arrays on ``grid`` (increasing, from 0 to 1):
    ``fap_grid``, ``eff_grid``, ``glitch_pdf``, ``clean_pdf``; scalars ``n_glitch``,
    ``n_clean``, ``bandwidth_glitch``, ``bandwidth_clean``, ``prior_log_odds``,
    ``min_samples`` (the health minimum per class).
    """

    def __init__(
        self,
        grid: np.ndarray,
        fap_grid: np.ndarray,
        eff_grid: np.ndarray,
        glitch_pdf: np.ndarray,
        clean_pdf: np.ndarray,
        *,
        n_glitch: int,
        n_clean: int,
        bandwidth_glitch: float,
        bandwidth_clean: float,
        prior_log_odds: float,
        min_samples: int = 50,
    ) -> None:
        self.grid = np.asarray(grid, dtype=np.float64)
        self.fap_grid = np.asarray(fap_grid, dtype=np.float64)
        self.eff_grid = np.asarray(eff_grid, dtype=np.float64)
        self.glitch_pdf = np.asarray(glitch_pdf, dtype=np.float64)
        self.clean_pdf = np.asarray(clean_pdf, dtype=np.float64)
        n = self.grid.size
        if n < 2 or any(
            a.size != n for a in (self.fap_grid, self.eff_grid, self.glitch_pdf, self.clean_pdf)
        ):
            raise CalibrationError("calibration arrays must share one grid of >= 2 points")
        self.n_glitch = int(n_glitch)
        self.n_clean = int(n_clean)
        self.bandwidth_glitch = float(bandwidth_glitch)
        self.bandwidth_clean = float(bandwidth_clean)
        self.prior_log_odds = float(prior_log_odds)
        self.min_samples = int(min_samples)
        with np.errstate(divide="ignore"):
            self.loglike_grid = np.log(self.glitch_pdf) - np.log(self.clean_pdf)
        self.id = hashlib.sha256(self._canonical().encode()).hexdigest()[:16]

    # -- fitting ---------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        glitch_ranks: Any,
        clean_ranks: Any,
        grid_points: int = 501,
        bandwidth: float | None = None,
        glitch_rate: float | None = None,
        clean_rate: float | None = None,
        min_samples: int = 50,
    ) -> CalibrationMap:
        """Fit from the ranks of glitch and clean samples.

        Parameters
        ----------
        glitch_ranks, clean_ranks : array-like
            Ranks in [0, 1] (clipped into it); NaN/inf raise CalibrationError.
        grid_points : int
            Maximum number of grid nodes (fewer when quantile nodes coincide).
        bandwidth : float, optional
            Fixed KDE bandwidth for both classes; default: each chosen by
            leave-one-bin-out likelihood.
        glitch_rate, clean_rate : float, optional
            Rates (Hz) setting the prior odds of PGLITCH; both or neither.
        min_samples : int
            Per-class minimum below which :meth:`health` reports not ok.
        """
        g = _clean_ranks(glitch_ranks, "glitch")
        c = _clean_ranks(clean_ranks, "clean")
        if grid_points < 3:
            raise CalibrationError(f"grid_points must be >= 3, got {grid_points}")
        if (glitch_rate is None) != (clean_rate is None):
            raise CalibrationError("give both glitch_rate and clean_rate, or neither")
        if glitch_rate is not None and clean_rate is not None:
            if glitch_rate <= 0 or clean_rate <= 0:
                raise CalibrationError("glitch_rate and clean_rate must be > 0")
            prior = float(np.log(glitch_rate / clean_rate))
        else:
            prior = float(np.log(g.size / c.size))
        nodes = _nodes(g, c, grid_points)
        gs, cs = np.sort(g), np.sort(c)
        fap = (_survival(cs, nodes) + 1.0) / (c.size + 1.0)
        eff = _survival(gs, nodes) / g.size
        hg = float(bandwidth) if bandwidth else select_bandwidth(g)
        hc = float(bandwidth) if bandwidth else select_bandwidth(c)
        return cls(
            nodes,
            fap,
            eff,
            cls._density(g, nodes, hg),
            cls._density(c, nodes, hc),
            n_glitch=g.size,
            n_clean=c.size,
            bandwidth_glitch=hg,
            bandwidth_clean=hc,
            prior_log_odds=prior,
            min_samples=min_samples,
        )

    @staticmethod
    def _density(r: np.ndarray, nodes: np.ndarray, h: float) -> np.ndarray:
        values, counts = _compress(r, _KDE_BINS)
        pdf = _kernel(nodes, values, h) @ counts
        # + one pseudo-sample uniform on [0, 1]: finite logs where a class is empty
        return (pdf + 1.0) / (r.size + 1.0)

    # -- evaluation (vectorised) -----------------------------------------------------
    def _at(self, table: np.ndarray, rank: Any) -> np.ndarray:
        r = np.asarray(rank, dtype=np.float64)
        return np.interp(np.clip(r, 0.0, 1.0), self.grid, table)

    def fap(self, rank: Any) -> np.ndarray:
        """P(rank >= r | clean), monotone non-increasing, >= 1/(n_clean+1)."""
        return self._at(self.fap_grid, rank)

    def eff(self, rank: Any) -> np.ndarray:
        """P(rank >= r | glitch), monotone non-increasing."""
        return self._at(self.eff_grid, rank)

    def loglike(self, rank: Any) -> np.ndarray:
        """log p(r | glitch) - log p(r | clean)."""
        return self._at(self.loglike_grid, rank)

    def pglitch(self, rank: Any) -> np.ndarray:
        """Posterior glitch probability from LOGLIKE and the prior odds."""
        # imported here: scipy.special (with scipy's array API layer, all of numpy's
        # submodules) costs ~0.3 CPU s that evaluate, which never asks, paid at start
        from scipy.special import expit

        return np.asarray(expit(self.loglike(rank) + self.prior_log_odds))

    def health(self, min_samples: int | None = None) -> tuple[bool, str]:
        """``(ok, reason)``: enough samples of each class and finite, monotone tables."""
        need = self.min_samples if min_samples is None else int(min_samples)
        if self.n_glitch < need:
            return False, f"too few glitch samples: {self.n_glitch} < {need}"
        if self.n_clean < need:
            return False, f"too few clean samples: {self.n_clean} < {need}"
        tables = (self.fap_grid, self.eff_grid, self.loglike_grid)
        if not all(np.all(np.isfinite(t)) for t in tables):
            return False, "non-finite values in the calibration tables"
        if np.any(np.diff(self.fap_grid) > 0) or np.any(np.diff(self.eff_grid) > 0):
            return False, "FAP or EFF not monotone"
        return True, "ok"

    # -- storage ---------------------------------------------------------------------
    def _content(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "grid": self.grid.tolist(),
            "fap": self.fap_grid.tolist(),
            "eff": self.eff_grid.tolist(),
            "glitch_pdf": self.glitch_pdf.tolist(),
            "clean_pdf": self.clean_pdf.tolist(),
            "n_glitch": self.n_glitch,
            "n_clean": self.n_clean,
            "bandwidth_glitch": self.bandwidth_glitch,
            "bandwidth_clean": self.bandwidth_clean,
            "prior_log_odds": self.prior_log_odds,
            "min_samples": self.min_samples,
        }

    def _canonical(self) -> str:
        return json.dumps(self._content(), sort_keys=True)

    def to_json(self) -> str:
        """Plain JSON (arrays as lists; floats round-trip exactly); includes ``id``."""
        return json.dumps({**self._content(), "id": self.id}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> CalibrationMap:
        try:
            d: Mapping[str, Any] = json.loads(text)
            if d.get("format") != _FORMAT:
                raise ValueError(f"format {d.get('format')!r}")
            cmap = cls(
                np.asarray(d["grid"]),
                np.asarray(d["fap"]),
                np.asarray(d["eff"]),
                np.asarray(d["glitch_pdf"]),
                np.asarray(d["clean_pdf"]),
                n_glitch=d["n_glitch"],
                n_clean=d["n_clean"],
                bandwidth_glitch=d["bandwidth_glitch"],
                bandwidth_clean=d["bandwidth_clean"],
                prior_log_odds=d["prior_log_odds"],
                min_samples=d.get("min_samples", 50),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise CalibrationError(f"malformed calibration JSON: {exc}") from exc
        if "id" in d and d["id"] != cmap.id:
            raise CalibrationError(f"calibration id mismatch: {d['id']} vs content {cmap.id}")
        return cmap

    def to_bytes(self) -> bytes:
        """UTF-8 :meth:`to_json`, for the artifact store."""
        return self.to_json().encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> CalibrationMap:
        return cls.from_json(data)
