"""The timeseries products of one classifier over one stride.

From ranks on a regular grid and a calibration map, the six products of DOMAIN.md:
PGLITCH, LOGLIKE, FAP, EFF, RANK and OK. Where OK is 0 the other products carry
their least alarming values (PGLITCH 0, LOGLIKE 0, FAP 1, EFF 1, RANK 0), so a
consumer that forgets to look at OK is not misled into vetoing data.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from idq_common.contracts import PRODUCTS

#: values written where OK = 0
INVALID = {"PGLITCH": 0.0, "LOGLIKE": 0.0, "FAP": 1.0, "EFF": 1.0, "RANK": 0.0}


class RankCalibration(Protocol):
    """What the products need of a calibration map."""

    def fap(self, rank: np.ndarray) -> np.ndarray: ...
    def eff(self, rank: np.ndarray) -> np.ndarray: ...
    def loglike(self, rank: np.ndarray) -> np.ndarray: ...
    def pglitch(self, rank: np.ndarray) -> np.ndarray: ...


def invalid_products(n: int) -> dict[str, np.ndarray]:
    """Products of a stride where nothing is valid (gap, no model, no calibration)."""
    out = {name: np.full(n, value) for name, value in INVALID.items()}
    out["OK"] = np.zeros(n)
    return out


def compute_products(
    rank: np.ndarray, valid: np.ndarray, calibration: RankCalibration | None
) -> dict[str, np.ndarray]:
    """Products for ranks on a grid.

    Parameters
    ----------
    rank : numpy.ndarray
        Classifier ranks in [0, 1] (entries where ``valid`` is False are ignored).
    valid : numpy.ndarray of bool
        Where the inputs are valid: in segments, data complete, model present.
    calibration : RankCalibration or None
        A healthy calibration map for the model that produced ``rank``; None makes
        every sample invalid.

    Returns
    -------
    dict
        Product name -> float64 array, in the order of :data:`idq_common.contracts.PRODUCTS`.
    """
    n = rank.shape[0]
    if calibration is None or not valid.any():
        return invalid_products(n)
    ok = valid & np.isfinite(rank)
    r = np.where(ok, np.clip(rank, 0.0, 1.0), 0.0)
    out = {
        "PGLITCH": calibration.pglitch(r),
        "LOGLIKE": calibration.loglike(r),
        "FAP": calibration.fap(r),
        "EFF": calibration.eff(r),
        "RANK": r,
    }
    for name, values in out.items():
        values = np.asarray(values, dtype=np.float64)
        ok &= np.isfinite(values)
        out[name] = values
    for name, fill in INVALID.items():
        out[name] = np.where(ok, out[name], fill)
    out["OK"] = ok.astype(np.float64)
    assert tuple(out) == PRODUCTS
    return out
