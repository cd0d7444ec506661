"""Summaries of produced frames against a known truth (demo, tests, benchmarks).

The efficiency of the *produced timeseries*: for each classifier, the FAP channel
read back from the GWF frames (with gwpy) at the times of the generator's glitches
(target triggers within the target bounds) where OK = 1, against the FAP at clean
times (seeded random times away from target triggers) where OK = 1:

- efficiency at FAP p = fraction of glitch times with FAP <= p;
- realised false-alarm fraction = fraction of clean times with FAP <= p (a calibrated
  pipeline gives about p).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from idq_common.contracts import channel_name
from idq_common.io.frames import (
    find_frames,
    parse_frame_name,
    read_channels,
    read_provenance,
)


@dataclass
class ClassifierSeries:
    """One classifier's products concatenated over frames."""

    times: np.ndarray
    products: dict[str, np.ndarray]
    ids: list[tuple[float, dict[str, Any]]] = field(default_factory=list)


def frame_files(
    directory: Path,
    observatory: str,
    description: str,
    start: float | None = None,
    end: float | None = None,
) -> list[Path]:
    """Frame files of the directory (LIGO layout), in GPS order, optionally of a span."""
    return find_frames(directory, observatory, description, start, end)


def load_series(
    files: Sequence[Path],
    ifo: str,
    classifiers: Sequence[str],
    fmin: float,
    fmax: float,
    sample_rate: float,
    products: Sequence[str] = ("FAP", "OK", "PGLITCH"),
) -> dict[str, ClassifierSeries]:
    """Read the products of every classifier from ``files`` (LALFrame) into arrays."""
    chunks: dict[str, dict[str, list[np.ndarray]]] = {
        c: {p: [] for p in products} for c in classifiers
    }
    times: list[np.ndarray] = []
    ids: dict[str, list[tuple[float, dict[str, Any]]]] = {c: [] for c in classifiers}
    for path in files:
        _, _, start, duration = parse_frame_name(path.name)
        names = [channel_name(ifo, p, c, fmin, fmax) for c in classifiers for p in products]
        data = read_channels(path, names)
        times.append(start + np.arange(round(duration * sample_rate)) / sample_rate)
        prov = read_provenance(path)
        for c in classifiers:
            ids[c].append((float(start), prov.get(c, {})))
            for p in products:
                chunks[c][p].append(data[channel_name(ifo, p, c, fmin, fmax)])
    t = np.concatenate(times) if times else np.zeros(0)
    return {
        c: ClassifierSeries(
            t, {p: np.concatenate(v) if v else np.zeros(0) for p, v in chunks[c].items()}, ids[c]
        )
        for c in classifiers
    }


def sample_at(
    series: ClassifierSeries, product: str, times: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(values, ok) of ``product`` at the grid samples nearest ``times``."""
    if series.times.size == 0 or times.size == 0:
        return np.zeros(0), np.zeros(0, dtype=bool)
    idx = np.clip(np.searchsorted(series.times, times), 0, series.times.size - 1)
    prev = np.clip(idx - 1, 0, series.times.size - 1)
    take = np.where(
        np.abs(series.times[prev] - times) < np.abs(series.times[idx] - times), prev, idx
    )
    return series.products[product][take], series.products["OK"][take] > 0.5


def efficiency_summary(
    series: Mapping[str, ClassifierSeries],
    glitch_times: np.ndarray,
    clean_times: np.ndarray,
    faps: Sequence[float] = (1e-3, 1e-2, 1e-1),
) -> dict[str, dict[str, Any]]:
    """Per classifier: efficiency and realised false-alarm fraction at each FAP."""
    out: dict[str, dict[str, Any]] = {}
    for name, s in series.items():
        g_fap, g_ok = sample_at(s, "FAP", glitch_times)
        c_fap, c_ok = sample_at(s, "FAP", clean_times)
        out[name] = {
            "ok_fraction": float(s.products["OK"].mean()) if s.products["OK"].size else 0.0,
            "n_glitch_ok": int(g_ok.sum()),
            "n_clean_ok": int(c_ok.sum()),
            "efficiency": {
                str(p): float((g_fap[g_ok] <= p).mean()) if g_ok.any() else float("nan")
                for p in faps
            },
            "false_alarm": {
                str(p): float((c_fap[c_ok] <= p).mean()) if c_ok.any() else float("nan")
                for p in faps
            },
        }
    return out
