"""GWF frames of the timeseries products: names, writing with provenance, reading back.

Frames are written with gwpy's LALFrame backend path (``lalframe``) so that any
gwpy/LAL user can read them. The ids of the model and calibration each classifier
used are recorded inside the frame: as the frame header's name (readable with
:func:`read_provenance`) and as an FrHistory record (visible to ``FrDump`` and other
frame tools).

Layout on disk is LIGO's: ``{dir}/{OBS}-{DESC}-{GPS5}/{OBS}-{DESC}-{GPS}-{DUR}.gwf`` with
``GPS5 = GPS // 100000``, so a day of one-second frames is spread over one or two
directories of at most 100,000 files instead of 86,400 files in one folder, and a
reader finds the frames of a span by name without listing everything.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lal
import lalframe
import numpy as np

from idq_common.exceptions import FrameError

GPS_DIR_SPAN = 100_000  # seconds of frames per directory (LIGO's GPS5 layout)

_NAME = re.compile(r"^(?P<obs>[A-Z]+)-(?P<desc>[A-Za-z0-9_]+)-(?P<start>\d+)-(?P<dur>\d+)\.gwf$")


def frame_name(observatory: str, description: str, start: float, duration: float) -> str:
    """``{OBS}-{DESCRIPTION}-{GPSSTART}-{DURATION}.gwf`` (integer GPS start and duration)."""
    if not float(start).is_integer() or not float(duration).is_integer():
        raise ValueError(f"frame start {start} and duration {duration} must be whole seconds")
    return f"{observatory}-{description}-{int(start)}-{int(duration)}.gwf"


def frame_dir(observatory: str, description: str, start: float) -> str:
    """``{OBS}-{DESCRIPTION}-{GPS // 100000}``: the directory of the frame starting at ``start``."""
    return f"{observatory}-{description}-{int(start) // GPS_DIR_SPAN}"


def frame_path(
    directory: str | Path, observatory: str, description: str, start: float, duration: float
) -> Path:
    """Where the frame of ``[start, start + duration)`` lives under ``directory``.

    A pure function of its arguments: the same stride gives the same path (outputs are
    idempotent).
    """
    return (
        Path(directory)
        / frame_dir(observatory, description, start)
        / frame_name(observatory, description, start, duration)
    )


def find_frames(
    directory: str | Path,
    observatory: str,
    description: str,
    start: float | None = None,
    end: float | None = None,
) -> list[Path]:
    """Frame files under ``directory`` overlapping ``[start, end)``, in GPS order.

    Only the ``GPS // 100000`` directories of the span are listed. Without a span,
    every frame of the observatory and description.
    """
    root = Path(directory)
    prefix = f"{observatory}-{description}-"
    if start is None or end is None:
        dirs = sorted(p for p in root.glob(prefix + "*") if p.is_dir())
    else:
        # a frame starting in the previous directory may reach into the span
        first = int(start) // GPS_DIR_SPAN - 1
        last = int(np.ceil(end)) // GPS_DIR_SPAN
        dirs = [root / f"{prefix}{k}" for k in range(max(first, 0), last + 1)]
    found = []
    for d in dirs:
        try:
            names = os.listdir(d)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for name in names:
            m = _NAME.match(name)
            if m is None or m["obs"] != observatory or m["desc"] != description:
                continue  # temporary files of a write in progress, other descriptions
            t0, dur = int(m["start"]), int(m["dur"])
            if start is not None and end is not None and (t0 + dur <= start or t0 >= end):
                continue
            found.append((t0, d / name))
    return [p for _, p in sorted(found)]


def read_span(
    directory: str | Path,
    observatory: str,
    description: str,
    channels: Sequence[str],
    start: float,
    end: float,
) -> Any:
    """The frames of ``[start, end)`` as one gwpy ``TimeSeriesDict`` (one series per channel).

    gwpy joins the frames; a missing frame inside the span is an error (``gap="raise"``)
    so a hole is never mistaken for data. Raises ``FileNotFoundError`` when no frame
    covers the span.
    """
    from gwpy.timeseries import TimeSeriesDict

    files = find_frames(directory, observatory, description, start, end)
    if not files:
        raise FileNotFoundError(f"no {observatory}-{description} frames for [{start}, {end})")
    return TimeSeriesDict.read(
        [str(f) for f in files], list(channels), start=start, end=end, gap="raise"
    )


def parse_frame_name(name: str) -> tuple[str, str, int, int]:
    """Inverse of :func:`frame_name`: (observatory, description, start, duration)."""
    m = _NAME.match(os.path.basename(name))
    if m is None:
        raise ValueError(f"not a frame file name: {name!r}")
    return m["obs"], m["desc"], int(m["start"]), int(m["dur"])


def write_frame(
    path: str | Path,
    start: float,
    duration: float,
    series: Mapping[str, np.ndarray],
    sample_rate: float,
    provenance: Mapping[str, Any],
) -> Path:
    """Write one frame holding every channel of ``series``, atomically.

    Parameters
    ----------
    path : str or Path
        Final file path; the frame is written to a temporary name beside it and
        renamed, so a reader never sees half a frame and a rewrite of the same
        stride replaces the file whole.
    start, duration : float
        GPS span of the frame (one stride).
    series : mapping
        Channel name -> samples (``duration * sample_rate`` of them).
    sample_rate : float
        Samples per second.
    provenance : mapping
        JSON-serialisable ids (per classifier: model_id, calibration_id).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    epoch = lal.LIGOTimeGPS(float(start))
    blob = json.dumps({"_idq": 1, **provenance}, sort_keys=True, separators=(",", ":"))
    # the frame header's name carries the provenance: LALFrame can read it back
    frame = lalframe.FrameNew(epoch, float(duration), blob, 0, 0, 0)
    n = round(duration * sample_rate)
    for name, values in series.items():
        data = np.ascontiguousarray(values, dtype=np.float64)
        if data.shape != (n,):
            raise ValueError(f"{name}: {data.shape[0]} samples, expected {n}")
        ts = lal.CreateREAL8TimeSeries(
            name, epoch, 0.0, 1.0 / sample_rate, lal.DimensionlessUnit, n
        )
        ts.data.data[:] = data
        lalframe.FrameAddREAL8TimeSeriesProcData(frame, ts)
    lalframe.FrameAddFrHistory(frame, "idq", blob)
    # LALFrame stamps history and file records with the wall-clock time, so a
    # re-written stride is equal in name, channels and provenance, not byte for byte.
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        lalframe.FrameWrite(frame, str(tmp))
        os.replace(tmp, path)
    except (RuntimeError, OSError) as exc:  # LAL reports failures as RuntimeError
        tmp.unlink(missing_ok=True)
        raise FrameError(f"cannot write frame {path}: {exc}") from exc
    return path


def read_provenance(path: str | Path) -> dict[str, Any]:
    """The provenance recorded in a frame written by :func:`write_frame`.

    Returns the JSON object stored as the frame header's name: per classifier,
    the ``model_id`` and ``calibration_id`` the products were computed with.

    Raises
    ------
    FrameError
        The file is not a readable frame, or holds no iDQ provenance.
    """
    try:
        stream = lalframe.FrameUFrFileOpen(str(path), "r")
        header = lalframe.FrameUFrameHRead(stream, 0)
        name = lalframe.FrameUFrameHQueryName(header)
    except RuntimeError as exc:  # LAL reports failures as RuntimeError
        raise FrameError(f"{path}: unreadable frame: {exc}") from exc
    try:
        obj = json.loads(name)
    except json.JSONDecodeError as exc:
        raise FrameError(f"{path}: frame name {name[:40]!r} is not iDQ provenance") from exc
    if not isinstance(obj, dict) or obj.pop("_idq", None) != 1:
        raise FrameError(f"{path}: no iDQ provenance record")
    return obj


def read_frame(path: str | Path, channels: list[str] | None = None) -> dict[str, np.ndarray]:
    """Read channels back with gwpy (the reader users have); name -> samples."""
    from gwpy.timeseries import TimeSeriesDict

    if channels is None:
        from gwpy.io.gwf import iter_channel_names

        channels = list(iter_channel_names(str(path)))
    tsd = TimeSeriesDict.read(str(path), channels)
    return {name: np.asarray(ts.value) for name, ts in tsd.items()}


def read_channels(path: str | Path, channels: Sequence[str]) -> dict[str, np.ndarray]:
    """Channels of one frame, read with LALFrame's stream reader; name -> samples.

    The same samples as :func:`read_frame` (gwpy), without gwpy's per-file overhead:
    for scans of thousands of one-second frames (summaries, reports, queries).
    """
    path = Path(path)
    _, _, start, duration = parse_frame_name(path.name)
    stream = lalframe.FrStreamOpen(str(path.parent), path.name)
    epoch = lal.LIGOTimeGPS(start)
    out = {}
    for name in channels:
        ts = lalframe.FrStreamReadREAL8TimeSeries(stream, name, epoch, float(duration), 0)
        out[name] = np.array(ts.data.data)
    return out
