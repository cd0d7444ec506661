"""Figures of merit for classifiers: efficiency at fixed false-alarm probability."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["DEFAULT_FAPS", "efficiency_at_fap"]

#: False-alarm probabilities quoted in reports.
DEFAULT_FAPS: tuple[float, ...] = (1e-3, 1e-2, 1e-1)


def efficiency_at_fap(
    glitch_scores: Sequence[float] | np.ndarray,
    clean_scores: Sequence[float] | np.ndarray,
    faps: Sequence[float] = DEFAULT_FAPS,
) -> np.ndarray:
    """Fraction of glitches flagged at each false-alarm probability.

    A sample is flagged when its score is strictly above a threshold. For a target
    FAP ``f`` over ``n`` clean scores sorted in decreasing order ``c[0] >= c[1] >= ...``,
    the threshold is ``c[k]`` with ``k = floor(f * n)``: at most ``k <= f n`` clean
    scores exceed it (ties make this conservative). The efficiency is the fraction of
    glitch scores above it; with ``k >= n`` every sample is flagged (efficiency 1).
    Any monotonic transform of the scores (rank, log-likelihood ratio) gives the same
    answer, so classifiers and the optimum compare directly.

    Parameters
    ----------
    glitch_scores, clean_scores : array-like
        Scores of glitch and clean samples (higher means more glitch-like).
    faps : sequence of float
        Target false-alarm probabilities in [0, 1].

    Returns
    -------
    numpy.ndarray
        Efficiency per FAP.

    Raises
    ------
    ValueError
        If there are no clean scores, no glitch scores, or a FAP lies outside [0, 1].
    """
    g = np.asarray(glitch_scores, dtype=np.float64)
    c = np.sort(np.asarray(clean_scores, dtype=np.float64))[::-1]
    if g.size == 0 or c.size == 0:
        raise ValueError("need at least one glitch and one clean score")
    f = np.asarray(faps, dtype=np.float64)
    if np.any((f < 0) | (f > 1)):
        raise ValueError("false-alarm probabilities must lie in [0, 1]")
    k = np.floor(f * c.size).astype(np.int64)
    thresh = np.where(k < c.size, c[np.minimum(k, c.size - 1)], -np.inf)
    g_sorted = np.sort(g)
    above = g.size - np.searchsorted(g_sorted, thresh, side="right")
    return above / g.size
