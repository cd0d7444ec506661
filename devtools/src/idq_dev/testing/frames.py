"""Timeseries product frames with known content, for query tests and benchmarks.

Values are seeded and smooth enough to look like products, and the caller can plant
extremes: the test then knows the answer a query must give without recomputing it
the way the code under test does.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from idq_common.contracts import PRODUCTS, channel_name
from idq_common.io.frames import frame_path, write_frame
from idq_common.progress import Progress


def product_columns(start: float, duration: float, rate: float, seed: int) -> dict[str, np.ndarray]:
    """Seeded PGLITCH, LOGLIKE, FAP, EFF, RANK, OK for one stride (OK all 1)."""
    n = round(duration * rate)
    rng = np.random.default_rng([seed, int(start)])
    rank = rng.uniform(0.0, 1.0, n)
    fap = np.clip(1.0 - rank, 1e-3, 1.0)  # never below 1e-3: planted minima stand out
    return {
        "PGLITCH": rank * 0.9,
        "LOGLIKE": np.log(rank + 1e-3),
        "FAP": fap,
        "EFF": rank,
        "RANK": rank,
        "OK": np.ones(n),
    }


def write_product_frames(
    directory: Path,
    ifo: str,
    classifiers: Sequence[str],
    start: float,
    end: float,
    stride: float,
    rate: float,
    fmin: float = 10.0,
    fmax: float = 2048.0,
    description: str = "IDQ_TIMESERIES",
    seed: int = 0,
    progress: Progress | None = None,
) -> Iterator[Path]:
    """Write one frame per stride of ``[start, end)``; yields each path (lazy)."""
    obs = ifo[0]
    for k, t in enumerate(np.arange(start, end, stride)):
        series = {}
        for i, c in enumerate(classifiers):
            cols = product_columns(float(t), stride, rate, seed + 1000 * i)
            for product in PRODUCTS:
                series[channel_name(ifo, product, c, fmin, fmax)] = cols[product]
        prov = {c: {"model_id": f"{c}-model", "calibration_id": f"{c}-cal"} for c in classifiers}
        path = frame_path(directory, obs, description, float(t), stride)
        yield write_frame(path, float(t), stride, series, rate, prov)
        if progress is not None:
            progress.update(k + 1)
