"""Counter-based random numbers keyed on GPS time.

Stream stages cut time into strides wherever the cadence falls, yet the random clean
times and synthetic triggers must not depend on those cuts. Drawing from a hash of
``(seed, block, k)`` instead of a sequential generator makes every value a pure
function of where it lies in GPS time, so any partition of a span gives the same set.
The hash is SplitMix64 (Steele, Lea & Flood 2014), vectorised over numpy ``uint64``.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser applied element-wise (wrapping ``uint64`` arithmetic)."""
    z = np.asarray(x, dtype=np.uint64) + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def hash_uniform(seed: int, block: np.ndarray, k: np.ndarray | int) -> np.ndarray:
    """Uniform floats in the open interval (0, 1), one per ``(seed, block, k)``.

    Parameters
    ----------
    seed : int
        Stream seed (any int; reduced modulo 2**64).
    block : numpy.ndarray
        Integer block indices (e.g. GPS seconds).
    k : numpy.ndarray or int
        Draw index inside the block, broadcast against ``block``.
    """
    s = splitmix64(np.array([seed % (1 << 64)], dtype=np.uint64))
    b = np.asarray(block, dtype=np.int64).astype(np.uint64)
    kk = np.asarray(k, dtype=np.int64).astype(np.uint64)
    h = splitmix64(splitmix64(s ^ b) ^ kk)
    # Top 53 bits, shifted by half a unit so 0 and 1 never occur (Poisson inverse CDF).
    return ((h >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / 9007199254740992.0)


def poisson_from_uniform(u: np.ndarray, mean: float) -> np.ndarray:
    """Inverse-CDF Poisson counts for uniforms ``u`` (exact up to float rounding)."""
    if mean <= 0:
        return np.zeros(np.shape(u), dtype=np.int64)
    kmax = int(mean + 12.0 * np.sqrt(mean) + 30)
    k = np.arange(kmax + 1)
    # log pmf summed in float64; cdf[-1] is 1 to within 1e-16 at this kmax.
    logpmf = k * np.log(mean) - mean - np.cumsum(np.log(np.maximum(k, 1)))
    cdf = np.cumsum(np.exp(logpmf))
    return np.minimum(np.searchsorted(cdf, u, side="left"), kmax).astype(np.int64)
