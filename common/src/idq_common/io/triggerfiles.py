"""Trigger files on disk (HDF5) -> :class:`TriggerSet`: Omicron and SNAX, read with h5py.

Omicron writes one file per channel and time chunk, named after LIGO's convention
``<IFO>-<SUBSYS>_<NAME>_OMICRON-<gps>-<duration>.h5`` (the channel ``<IFO>:<SUBSYS>-<NAME>``:
the first ``_`` of the description is the channel's ``-``; archived as
``<archive>/<IFO>/<SUBSYS>_<NAME>_OMICRON/<gps // 100000>/<file>``, as pyomicron's
``get_archive_filename`` lays it out), holding a top-level compound dataset
``triggers`` with float64 columns ``time, frequency, tstart, tend, fstart, fend, snr,
q, amplitude, phase`` (what hveto and gwsumm read with ``EventTable.read(f,
format="hdf5", path="triggers")``); other datasets (``segments``, astropy's column
metadata) are ignored. Tables converted from LIGO_LW ``sngl_burst`` are read too:
``peak_time`` + ``peak_time_ns`` (or gwpy's ``peak``) for the time, ``peak_frequency``
(or ``central_freq``) for the frequency. A file attribute ``channel``, when present,
names the channel instead of the file name.

SNAX (gstlal feature extractor) writes one file per time chunk holding one group per
channel (``<IFO>:<SUBSYS>-<NAME>`` possibly with a ``_<flow>_<fhigh>`` band suffix),
each with one or more compound datasets of columns ``time, frequency, q, snr, phase,
duration`` (the layout ``gwpy.table.EventTable.read(format="hdf5.snax")`` reads).

Both come back as a :class:`TriggerSet` plus the optional float64 columns ``q``,
``phase``, ``duration`` (Omicron's ``duration`` is ``tend - tstart``), sorted by
(time, channel).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from idq_common.data.triggers import TriggerSet
from idq_common.exceptions import InvalidMessageError

__all__ = [
    "FILE_FORMATS",
    "TriggerFile",
    "find_trigger_files",
    "omicron_channel",
    "read_triggers",
]

FILE_FORMATS: tuple[str, ...] = ("omicron", "snax")

#: ``<OBS>-<DESCRIPTION>-<GPS>-<DURATION>.<ext>`` (LIGO-T050017)
_NAME = re.compile(
    r"^(?P<obs>[A-Z][0-9]?)-(?P<desc>[A-Za-z0-9_]+)-(?P<start>[0-9]+(\.[0-9]+)?)"
    r"-(?P<dur>[0-9]+(\.[0-9]+)?)\.(h5|hdf5|hdf)$"
)
_EXTRA = ("q", "phase", "duration")


@dataclass(frozen=True)
class TriggerFile:
    """A trigger file and the span its name claims (None: read it to know)."""

    path: Path
    start: float | None
    end: float | None

    def overlaps(self, start: float, end: float) -> bool:
        if self.start is None or self.end is None:
            return True
        return self.start < end and self.end > start


def omicron_channel(path: str | os.PathLike[str]) -> str:
    """The channel of an Omicron file name: ``L1-ASC_AUX_OMICRON-...`` -> ``L1:ASC-AUX``.

    Raises
    ------
    InvalidMessageError
        The name does not follow the convention.
    """
    m = _NAME.match(Path(path).name)
    desc = m["desc"] if m else ""
    if not m or not desc.endswith("_OMICRON") or "_" not in desc[: -len("_OMICRON")]:
        raise InvalidMessageError(
            f"{Path(path).name}: not an Omicron file name like "
            "L1-ASC_AUX_OUT_DQ_OMICRON-<gps>-<duration>.h5"
        )
    subsys, _, name = desc[: -len("_OMICRON")].partition("_")
    return f"{m['obs']}:{subsys}-{name}"


def find_trigger_files(
    paths: Iterable[str | os.PathLike[str]], start: float, end: float
) -> list[TriggerFile]:
    """HDF5 files under ``paths`` (files or directories, searched recursively) whose
    name span overlaps ``[start, end)``, in (start, name) order."""
    found: list[TriggerFile] = []
    for p in map(Path, paths):
        candidates = [p] if p.is_file() else sorted(p.rglob("*.h*5")) + sorted(p.rglob("*.hdf"))
        for f in candidates:
            if f.suffix not in (".h5", ".hdf5", ".hdf"):
                continue
            m = _NAME.match(f.name)
            tf = (
                TriggerFile(f, float(m["start"]), float(m["start"]) + float(m["dur"]))
                if m
                else TriggerFile(f, None, None)
            )
            if tf.overlaps(start, end):
                found.append(tf)
    unique = {tf.path.resolve(): tf for tf in found}
    return sorted(unique.values(), key=lambda tf: (tf.start or 0.0, tf.path.name))


def _column(data: np.ndarray, *names: str) -> np.ndarray | None:
    for name in names:
        if data.dtype.names and name in data.dtype.names:
            return np.asarray(data[name], dtype=np.float64)
    return None


def _time(data: np.ndarray) -> np.ndarray | None:
    """Peak time: ``time`` (Omicron, SNAX), ``peak`` (gwpy's sngl_burst column),
    ``trigger_time`` (older SNAX), or LIGO_LW's ``peak_time`` + ``peak_time_ns``."""
    time = _column(data, "time", "peak", "trigger_time")
    if time is None and data.dtype.names and {"peak_time", "peak_time_ns"} <= set(data.dtype.names):
        # integer seconds + nanoseconds: summed as float64 like gwpy's ``peak`` column
        time = np.asarray(data["peak_time"], dtype=np.float64) + 1e-9 * np.asarray(
            data["peak_time_ns"], dtype=np.float64
        )
    return time


@dataclass
class _Parts:
    channels: list[str]
    index: dict[str, int]
    chan: list[np.ndarray]
    cols: dict[str, list[np.ndarray]]
    extra: dict[str, list[np.ndarray | None]]

    @classmethod
    def new(cls) -> _Parts:
        return cls(
            [], {}, [], {c: [] for c in ("time", "snr", "frequency")}, {c: [] for c in _EXTRA}
        )

    def add(self, channel: str, data: np.ndarray, where: str, start: float, end: float) -> None:
        time = _time(data)
        snr = _column(data, "snr")
        freq = _column(data, "frequency", "peak_frequency", "central_freq")
        if time is None or snr is None or freq is None:
            raise InvalidMessageError(f"{where}: no time, snr or frequency column")
        keep = (time >= start) & (time < end)
        if not keep.any():
            return
        i = self.index.setdefault(channel, len(self.channels))
        if i == len(self.channels):
            self.channels.append(channel)
        n = int(keep.sum())
        self.chan.append(np.full(n, i, dtype=np.int32))
        for name, col in (("time", time), ("snr", snr), ("frequency", freq)):
            self.cols[name].append(col[keep])
        duration = _column(data, "duration")
        if duration is None:
            tstart, tend = _column(data, "tstart"), _column(data, "tend")
            if tstart is not None and tend is not None:
                duration = tend - tstart
        for name in ("q", "phase"):
            opt = _column(data, name)
            self.extra[name].append(None if opt is None else opt[keep])
        self.extra["duration"].append(None if duration is None else duration[keep])

    def result(self) -> tuple[TriggerSet, dict[str, np.ndarray]]:
        if not self.chan:
            return TriggerSet.empty(tuple(self.channels)), {}
        ts = TriggerSet(
            channels=tuple(self.channels),
            channel=np.concatenate(self.chan),
            time=np.concatenate(self.cols["time"]),
            snr=np.concatenate(self.cols["snr"]),
            frequency=np.concatenate(self.cols["frequency"]),
        )
        extra = {
            name: np.concatenate([p for p in parts if p is not None])
            for name, parts in self.extra.items()
            if all(p is not None for p in parts)
        }
        order = np.lexsort((ts.channel, ts.time))
        return ts.take(order), {name: col[order] for name, col in extra.items()}


def read_triggers(
    files: Sequence[TriggerFile | str | os.PathLike[str]],
    fmt: str,
    start: float,
    end: float,
) -> tuple[TriggerSet, dict[str, np.ndarray]]:
    """Every trigger of ``files`` with ``start <= time < end``.

    Parameters
    ----------
    files : sequence
        Paths or :class:`TriggerFile` items.
    fmt : {"omicron", "snax"}
        File layout.
    start, end : float
        GPS span.

    Returns
    -------
    (TriggerSet, dict)
        The triggers sorted by (time, channel), and the optional columns present in
        every file read (``q``, ``phase``, ``duration``).

    Raises
    ------
    InvalidMessageError
        A file that is not of the layout (named in the message).
    """
    import h5py

    if fmt not in FILE_FORMATS:
        raise ValueError(f"format must be one of {FILE_FORMATS}, got {fmt!r}")
    parts = _Parts.new()
    for item in files:
        path = item.path if isinstance(item, TriggerFile) else Path(item)
        try:
            with h5py.File(path, "r") as h5:
                if fmt == "omicron":
                    if "triggers" not in h5:
                        raise InvalidMessageError(f"{path}: no 'triggers' dataset (Omicron)")
                    attr = h5.attrs.get("channel")
                    channel = attr.decode() if isinstance(attr, bytes) else attr
                    channel = str(channel) if channel else omicron_channel(path)
                    parts.add(channel, h5["triggers"][()], str(path), start, end)
                else:
                    for channel, group in h5.items():
                        if not isinstance(group, h5py.Group):
                            raise InvalidMessageError(f"{path}/{channel}: not a channel group")
                        for name, ds in group.items():
                            parts.add(channel, ds[()], f"{path}/{channel}/{name}", start, end)
        except OSError as exc:
            raise InvalidMessageError(f"{path}: not a readable HDF5 file: {exc}") from None
    return parts.result()
