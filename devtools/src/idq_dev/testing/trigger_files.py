"""Omicron and SNAX HDF5 trigger files made from the synthetic model (seeded).

The layouts :mod:`idq_common.io.triggerfiles` reads: Omicron, one file per channel and
chunk named ``<IFO>-<SUBSYS>_<NAME>_OMICRON-<gps>-<dur>.h5`` with a ``triggers``
compound dataset; SNAX, one file per chunk ``<OBS>-SNAX_FEATURES-<gps>-<dur>.h5``
with one group per channel. The ``q``/``phase``/``duration`` columns the model lacks
are drawn from a generator seeded by the model's seed, so files are reproducible.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from idq_common.data.synthetic import SyntheticModel
from idq_common.data.triggers import TriggerSet

OMICRON_COLUMNS = (
    "time", "frequency", "tstart", "tend", "fstart", "fend", "snr", "q", "amplitude", "phase",
)  # fmt: skip
SNAX_COLUMNS = ("time", "frequency", "q", "snr", "phase", "duration")


def _columns(model: SyntheticModel, ts: TriggerSet, start: float) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([model.seed, int(start)])
    n = len(ts.time)
    q = rng.uniform(3.3, 100.0, n)
    duration = rng.uniform(0.01, 0.5, n)
    return {
        "time": ts.time,
        "snr": ts.snr,
        "frequency": ts.frequency,
        "q": q,
        "phase": rng.uniform(-np.pi, np.pi, n),
        "duration": duration,
        "tstart": ts.time - duration / 2,
        "tend": ts.time + duration / 2,
        "fstart": ts.frequency * 0.8,
        "fend": ts.frequency * 1.2,
        "amplitude": ts.snr * 1e-21,
    }


def _table(cols: dict[str, np.ndarray], names: tuple[str, ...], rows: np.ndarray) -> np.ndarray:
    out = np.zeros(int(rows.sum()), dtype=[(c, "<f8") for c in names])
    for c in names:
        out[c] = cols[c][rows]
    return out


def omicron_name(channel: str, start: int, duration: int) -> str:
    """``L1:ASC-AUX_X`` -> ``L1-ASC_AUX_X_OMICRON-<start>-<duration>.h5``."""
    ifo, _, rest = channel.partition(":")
    return f"{ifo}-{rest.replace('-', '_', 1)}_OMICRON-{start}-{duration}.h5"


def write_omicron(
    model: SyntheticModel, directory: Path, start: int, end: int, file_seconds: int = 64
) -> list[Path]:
    """Omicron files of every channel of ``model`` over ``[start, end)``."""
    import h5py

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for t0 in range(start, end, file_seconds):
        t1 = min(t0 + file_seconds, end)
        ts = model.generate(float(t0), float(t1))
        cols = _columns(model, ts, t0)
        for i, channel in enumerate(model.channels):
            path = directory / omicron_name(channel, t0, t1 - t0)
            with h5py.File(path, "w") as h5:
                h5.create_dataset("triggers", data=_table(cols, OMICRON_COLUMNS, ts.channel == i))
            paths.append(path)
    return paths


def write_snax(
    model: SyntheticModel, directory: Path, start: int, end: int, file_seconds: int = 64
) -> list[Path]:
    """SNAX feature files over ``[start, end)``, one group per channel, one dataset per file."""
    import h5py

    directory.mkdir(parents=True, exist_ok=True)
    obs = model.ifo[0]
    paths = []
    for t0 in range(start, end, file_seconds):
        t1 = min(t0 + file_seconds, end)
        ts = model.generate(float(t0), float(t1))
        cols = _columns(model, ts, t0)
        path = directory / f"{obs}-SNAX_FEATURES-{t0}-{t1 - t0}.h5"
        with h5py.File(path, "w") as h5:
            for i, channel in enumerate(model.channels):
                group = h5.create_group(channel)
                group.create_dataset(str(t0), data=_table(cols, SNAX_COLUMNS, ts.channel == i))
        paths.append(path)
    return paths


def expected(
    model: SyntheticModel, start: int, end: int, file_seconds: int = 64, fmt: str = "snax"
) -> dict[str, np.ndarray]:
    """The columns the files of ``[start, end)`` give back, sorted by (time, channel).

    Omicron stores no duration: it is ``tend - tstart``, rounded at GPS magnitude.
    """
    parts = []
    for t0 in range(start, end, file_seconds):
        t1 = min(t0 + file_seconds, end)
        ts = model.generate(float(t0), float(t1))
        cols = _columns(model, ts, t0)
        cols["channel"] = ts.channel.astype(np.float64)
        if fmt == "omicron":
            cols["duration"] = cols["tend"] - cols["tstart"]
        parts.append(cols)
    merged = {c: np.concatenate([p[c] for p in parts]) for c in parts[0]}
    order = np.lexsort((merged["channel"], merged["time"]))
    return {c: v[order] for c, v in merged.items()}
