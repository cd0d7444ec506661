"""Seeded synthetic triggers with a known truth, and the Bayes-optimal classifier.

Model (:class:`SyntheticModel`):

- **Glitches**: a Poisson process at ``glitch_rate`` on the target channel; each glitch
  is a target trigger with Pareto snr (``x_min * U**(-1/alpha)``, from ``target_snr_min``)
  and log-uniform frequency.
- **Witnesses** ``i = 0..n_witness-1``: for each glitch, independently with probability
  ``p_i`` (strong to weak: ``p_max * decay**i`` unless given), a witness trigger at
  ``t + sigma_t * Z`` (Z standard normal, cut at +-6) with
  ``ln snr = ln a + b ln x + sigma_ln * N``; it is recorded only if its snr reaches the
  threshold (a trigger generator emits nothing below threshold). Its frequency is drawn
  like background, so frequency carries no information.
- **Background**: every auxiliary channel (witness and noise) also fires as a Poisson
  process at its background rate, snr Pareto above the threshold with index
  ``background_snr_alpha``, log-uniform frequency.

Chunk invariance: GPS time is cut into fixed blocks of ``block`` seconds, block ``k``
drawing from generators seeded by ``(seed, k, stream)``. ``generate(a, c)`` builds every
block whose triggers can reach ``[a, c)`` (witness jitter may cross a block edge) and
keeps rows in ``[a, c)``, so it equals ``TriggerSet.concat([generate(a, b),
generate(b, c)])`` for any ``b`` and is the same on every run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import NamedTuple, Protocol

import numpy as np
from scipy.special import logsumexp, ndtr

from idq_common.data.base import ClassifierData
from idq_common.data.triggers import TriggerSet
from idq_common.science.features import FeatureSpec

__all__ = ["SyntheticModel", "SyntheticSource", "Truth"]

_JITTER_CUT = 6.0  # witness jitter is cut at +-6 sigma so blocks have a finite reach


class Truth(NamedTuple):
    """Injected glitches: GPS ``time`` and target ``snr`` (sorted by time)."""

    time: np.ndarray
    snr: np.ndarray


class _Block(NamedTuple):
    glitch_time: np.ndarray
    glitch_snr: np.ndarray
    triggers: TriggerSet


@dataclass(frozen=True)
class SyntheticModel:
    """Seeded generator of target glitches, witnesses and background (module docstring).

    Rates are in Hz, times in seconds. ``witness_probs`` overrides the default
    ``p_max * decay**i`` sequence. Channel names are ``{ifo}:AUX-WIT_{i:03d}`` and
    ``{ifo}:AUX-NOISE_{i:04d}`` (plus ``_{flow}_{fhigh}`` when ``band_suffix``).
    """

    seed: int = 0
    ifo: str = "H1"
    target_channel: str = ""
    n_witness: int = 8
    n_noise: int = 24
    glitch_rate: float = 0.1
    target_snr_min: float = 6.0
    target_snr_alpha: float = 1.5
    snr_threshold: float = 5.5
    witness_probs: tuple[float, ...] | None = None
    witness_prob_max: float = 0.9
    witness_prob_decay: float = 0.7
    witness_snr_scale: float = 0.8
    witness_snr_power: float = 1.0
    witness_snr_sigma: float = 0.3
    jitter_sigma: float = 0.02
    witness_background_rate: float = 0.5
    noise_background_rate: float = 0.5
    background_snr_alpha: float = 3.0
    freq_low: float = 10.0
    freq_high: float = 2048.0
    band_suffix: bool = False
    block: float = 16.0

    def __post_init__(self) -> None:
        if not self.target_channel:
            object.__setattr__(self, "target_channel", f"{self.ifo}:GDS-CALIB_STRAIN")
        if self.witness_probs is not None:
            object.__setattr__(self, "witness_probs", tuple(float(p) for p in self.witness_probs))
            if len(self.witness_probs) != self.n_witness:
                raise ValueError("witness_probs must have n_witness entries")
        if self.seed < 0 or self.block <= 0 or self.glitch_rate < 0:
            raise ValueError("seed, glitch_rate must be >= 0 and block > 0")
        if self.target_snr_min < self.snr_threshold:
            raise ValueError("target_snr_min must be at least snr_threshold")

    # -- channels and parameters ----------------------------------------------------
    @cached_property
    def witness_channels(self) -> tuple[str, ...]:
        return tuple(f"{self.ifo}:AUX-WIT_{i:03d}{self._suffix}" for i in range(self.n_witness))

    @cached_property
    def noise_channels(self) -> tuple[str, ...]:
        return tuple(f"{self.ifo}:AUX-NOISE_{i:04d}{self._suffix}" for i in range(self.n_noise))

    @property
    def _suffix(self) -> str:
        return f"_{self.freq_low:g}_{self.freq_high:g}" if self.band_suffix else ""

    @cached_property
    def aux_channels(self) -> tuple[str, ...]:
        """Witness then noise channels (the feature channels)."""
        return self.witness_channels + self.noise_channels

    @cached_property
    def channels(self) -> tuple[str, ...]:
        """Channel table of generated sets: target, witnesses, noise."""
        return (self.target_channel, *self.aux_channels)

    @cached_property
    def probabilities(self) -> np.ndarray:
        """Witness fire probability ``p_i`` per witness."""
        if self.witness_probs is not None:
            return np.array(self.witness_probs)
        return self.witness_prob_max * self.witness_prob_decay ** np.arange(self.n_witness)

    @cached_property
    def background_rates(self) -> np.ndarray:
        """Background rate (Hz) per auxiliary channel."""
        return np.concatenate(
            [
                np.full(self.n_witness, self.witness_background_rate),
                np.full(self.n_noise, self.noise_background_rate),
            ]
        )

    # -- generation -----------------------------------------------------------------
    def _freq(self, rng: np.random.Generator, n: int) -> np.ndarray:
        lo, hi = math.log(self.freq_low), math.log(self.freq_high)
        return np.exp(lo + (hi - lo) * rng.random(n))

    def _glitches(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, k, 0])
        n = int(rng.poisson(self.glitch_rate * self.block))
        t = np.sort(k * self.block + self.block * rng.random(n))
        snr = self.target_snr_min * (1.0 + rng.pareto(self.target_snr_alpha, n))
        return t, snr, self._freq(rng, n)

    def _build_block(self, k: int) -> _Block:
        tg, sg, fg = self._glitches(k)
        ng, nw = tg.size, self.n_witness
        # Witness responses: fixed-shape draws so the stream never depends on outcomes.
        rng = np.random.default_rng([self.seed, k, 1])
        fire = rng.random((ng, nw)) < self.probabilities
        jitter = np.clip(rng.standard_normal((ng, nw)), -_JITTER_CUT, _JITTER_CUT)
        lsnr = (
            math.log(self.witness_snr_scale)
            + self.witness_snr_power * np.log(sg)[:, None]
            + self.witness_snr_sigma * rng.standard_normal((ng, nw))
        )
        wfreq = self._freq(rng, ng * nw).reshape(ng, nw)
        wsnr = np.exp(lsnr)
        seen = fire & (wsnr >= self.snr_threshold)
        gi, wi = np.nonzero(seen)
        w_t = tg[gi] + self.jitter_sigma * jitter[gi, wi]
        # Background on every auxiliary channel.
        rng = np.random.default_rng([self.seed, k, 2])
        counts = rng.poisson(self.background_rates * self.block)
        nb = int(counts.sum())
        b_chan = np.repeat(np.arange(1, len(self.aux_channels) + 1, dtype=np.int32), counts)
        b_t = k * self.block + self.block * rng.random(nb)
        b_snr = self.snr_threshold * (1.0 + rng.pareto(self.background_snr_alpha, nb))
        b_f = self._freq(rng, nb)
        chan = np.concatenate([np.zeros(ng, dtype=np.int32), (wi + 1).astype(np.int32), b_chan])
        time = np.concatenate([tg, w_t, b_t])
        order = np.lexsort((chan, time))
        trig = TriggerSet(
            self.channels,
            chan[order],
            time[order],
            np.concatenate([sg, wsnr[gi, wi], b_snr])[order],
            np.concatenate([fg, wfreq[gi, wi], b_f])[order],
        )
        return _Block(tg, sg, trig)

    def _blocks(self, start: float, end: float, reach: float) -> range:
        lo = max(math.floor((start - reach) / self.block), 0)
        hi = math.floor((end + reach) / self.block)
        return range(lo, hi + 1)

    def generate(self, start: float, end: float) -> TriggerSet:
        """Every trigger (target, witness, background) with ``start <= time < end``.

        Rows are sorted by (time, channel index); the channel table is :attr:`channels`.
        """
        if end <= start:
            return TriggerSet.empty(self.channels)
        reach = _JITTER_CUT * self.jitter_sigma
        parts = [_cached_block(self, k).triggers for k in self._blocks(start, end, reach)]
        merged = TriggerSet.concat(parts) if parts else TriggerSet.empty(self.channels)
        out = merged.select_time(start, end)
        order = np.lexsort((out.channel, out.time))
        return out.take(order)

    def truth(self, start: float, end: float) -> Truth:
        """Injected glitches in ``[start, end)``, whatever their snr."""
        ts, ss = [], []
        for k in self._blocks(start, end, 0.0):
            t, s, _ = self._glitches(k)
            keep = (t >= start) & (t < end)
            ts.append(t[keep])
            ss.append(s[keep])
        if not ts:
            return Truth(np.zeros(0), np.zeros(0))
        return Truth(np.concatenate(ts), np.concatenate(ss))

    # -- the Bayes-optimal classifier -----------------------------------------------
    def optimal_log_likelihood_ratio(
        self,
        features: np.ndarray,
        spec: FeatureSpec,
        target_snr_bounds: tuple[float, float] = (10.0, math.inf),
        n_quad: int = 128,
    ) -> np.ndarray:
        r"""ln [p(features | glitch) / p(features | clean)] under this model.

        Derivation. Per witness channel the feature is the loudest trigger ``(S, D)``
        in the window ``[t-w, t+w]`` (or "none"). Background is a Poisson process in
        (time, snr) with intensity ``r g(s)``, ``g`` the Pareto density above threshold
        ``s0``; so for a clean time the loudest is at ``(S, D)`` with density
        ``r g(S) exp(-2wr(1 - G(S)))``, and "none" has probability ``exp(-2wr)``. At a
        glitch of snr ``x`` the witness adds one point with defective density
        ``q(S, D | x) = p phi_sigma_t(D) LN(S; ln a + b ln x, sigma_ln)`` on
        ``S >= s0, |D| <= w``. The loudest is then at ``(S, D)`` either as background
        with no louder witness or as the witness with no louder background:
        ``[r g(S) (1 - Q(S|x)) + q(S, D|x)] exp(-2wr(1 - G(S)))``, with
        ``Q(S|x) = p P(|jitter| <= w) P(witness snr > S | x)``. The exponential cancels:

        .. math::
            L_i(S, D | x) = 1 - Q(S|x) + q(S, D|x) / (r g(S)),\qquad
            L_i(\text{none} | x) = 1 - Q(s_0|x).

        Noise channels and frequencies have the same law under both hypotheses (ratio
        1). Given ``x`` the witnesses are independent, so the ratio is
        ``E_x[prod_i L_i(x)]`` over the target snr law truncated to
        ``target_snr_bounds`` (the glitch-sample selection); the expectation is a
        midpoint rule on ``n_quad`` quantiles. Neglected (documented, small): other
        glitches within the window (rate x 2w), jitter beyond 6 sigma, and the feature
        window's float rounding. Requires ``snr`` and ``dt`` columns for witnesses and
        a positive witness background rate.

        Parameters
        ----------
        features : numpy.ndarray
            Matrix from :func:`idq_common.science.features.feature_matrix` with ``spec``.
        spec : FeatureSpec
            Its spec; witness channels absent from it are treated as unobserved
            (marginalised: ratio 1).
        target_snr_bounds : tuple of float
            snr range that defines a glitch sample (production ``snr >= 10``).
        n_quad : int
            Quadrature points over the target snr.

        Returns
        -------
        numpy.ndarray
            Natural-log likelihood ratio per row.
        """
        if self.witness_background_rate <= 0:
            raise ValueError("the optimal ratio needs a positive witness background rate")
        features = np.asarray(features, dtype=np.float64)
        w, s0 = spec.window, self.snr_threshold
        xs = self._target_quantiles(target_snr_bounds, n_quad)
        mu = math.log(self.witness_snr_scale) + self.witness_snr_power * np.log(xs)  # (Q,)
        sig_ln, sig_t = self.witness_snr_sigma, self.jitter_sigma
        p_win = math.erf(w / (sig_t * math.sqrt(2.0)))
        alpha, r = self.background_snr_alpha, self.witness_background_rate
        total = np.zeros((features.shape[0], xs.size))
        for i, name in enumerate(self.witness_channels):
            if name not in spec.channels:
                continue
            p = self.probabilities[i]
            S = features[:, spec.column_index(name, "snr")][:, None]
            D = features[:, spec.column_index(name, "dt")][:, None]
            seen = S[:, 0] > 0
            z_none = (math.log(s0) - mu) / sig_ln
            lr = np.broadcast_to(1.0 - p * p_win * ndtr(-z_none), total.shape).copy()
            if seen.any():
                Ss, Ds = S[seen], D[seen]
                z = (np.log(Ss) - mu) / sig_ln
                q_over_rg = (
                    p
                    * np.exp(-0.5 * (Ds / sig_t) ** 2)
                    / (sig_t * math.sqrt(2 * math.pi))
                    * np.exp(-0.5 * z**2)
                    / (Ss * sig_ln * math.sqrt(2 * math.pi))
                    / (r * alpha * s0**alpha * Ss ** (-alpha - 1.0))
                )
                lr[seen] = 1.0 - p * p_win * ndtr(-z) + q_over_rg
            total += np.log(lr)
        return logsumexp(total, axis=1) - math.log(xs.size)

    def _target_quantiles(self, bounds: tuple[float, float], n: int) -> np.ndarray:
        # Pareto CDF F(x) = 1 - (x_min/x)**alpha; midpoints of n equal-mass cells
        # between the bounds, mapped back through the inverse CDF.
        a, xm = self.target_snr_alpha, self.target_snr_min
        lo, hi = max(bounds[0], xm), max(bounds[1], xm)
        f_lo, f_hi = 1.0 - (xm / lo) ** a, 1.0 - (xm / hi) ** a if math.isfinite(hi) else 1.0
        u = f_lo + (f_hi - f_lo) * (np.arange(n) + 0.5) / n
        return xm * (1.0 - u) ** (-1.0 / a)

    def glitch_fraction_loud(self, snr: float) -> float:
        """P(target snr >= ``snr``) per glitch."""
        return float(min(1.0, (self.target_snr_min / snr) ** self.target_snr_alpha))


@lru_cache(maxsize=8)
def _cached_block(model: SyntheticModel, k: int) -> _Block:
    # A stream asks for the same block stride after stride; keep a few around.
    return model._build_block(k)


class TriggerModel(Protocol):
    """A seeded generator of triggers over any span (SyntheticModel, FamilyModel)."""

    def generate(self, start: float, end: float) -> TriggerSet: ...


class SyntheticSource(ClassifierData):
    """A seeded trigger generator (:class:`SyntheticModel`, or any :class:`TriggerModel`)
    seen as a data source over a span."""

    def __init__(
        self,
        model: TriggerModel,
        start: float,
        end: float,
        segs: Iterable | None = None,
        channels: Iterable[str] | None = None,
    ) -> None:
        super().__init__(start, end, segs, channels)
        self.model = model

    def _read(self) -> TriggerSet:
        return self.model.generate(self.start, self.end)
