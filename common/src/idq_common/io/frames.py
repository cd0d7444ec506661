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

import ctypes
import json
import os
import re
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lal
import lalframe
import lalframe._lalframe
import numpy as np

from idq_common.exceptions import FrameError

GPS_DIR_SPAN = 100_000  # seconds of frames per directory (LIGO's GPS5 layout)

# The C entry point that returns a channel's sample buffer. Through SWIG it comes back
# as an untyped ``void *`` object (not writable, and SWIG warns of a leak on every
# call), so it is called through ctypes on the SWIG module's own library handle, which
# resolves it in the very liblalframe the SWIG objects come from.
_LIB = ctypes.CDLL(lalframe._lalframe.__file__)
_vector_data = _LIB.XLALFrameUFrChanVectorQueryData
_vector_data.restype = ctypes.c_void_p
_vector_data.argtypes = [ctypes.c_void_p]


def _framel_memory_writer() -> tuple[Any, Any, Any] | None:
    """FrameL's ``FrFileNew``, ``FrameWrite`` and ``FrFileOEnd`` when LALFrame's backend
    is FrameL (its frame handle is then FrameL's ``FrameH``), else None.

    ``lalframe.FrameWrite`` opens an FrFile on disk, and FrameL writes each of a
    frame's ~185 structures with its own ``write(2)`` to ``<name>.tmp`` and renames it.
    An FrFile over a memory buffer (``FrFileNew(NULL, -1, buf, size)``, what FrameL's
    own ``FrameWriteToBuf`` uses, with LALFrame's settings: compression unchanged,
    structure and file checksums) gives the same bytes (``tests/common/test_frames.py``
    compares them with ``lalframe.FrameWrite``'s file), written with one ``write``.
    """
    names = ("FrFileNew", "FrameWrite", "FrFileOEnd", "XLALFrameUFrameHWrite_FrameL_")
    if not all(hasattr(_LIB, n) for n in names) or hasattr(_LIB, "XLALFrameUFrameHWrite_FrameC_"):
        return None
    new, write, end = _LIB.FrFileNew, _LIB.FrameWrite, _LIB.FrFileOEnd
    new.restype, new.argtypes = (
        ctypes.c_void_p,
        [ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_long],
    )
    write.restype, write.argtypes = ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p]
    end.restype, end.argtypes = ctypes.c_long, [ctypes.c_void_p]
    return new, write, end


_FRAMEL = _framel_memory_writer()

#: a channel is compressed only when fewer than this fraction of its samples change
#: (sample-and-hold and constant products: OK, OVL's few levels), see ``write_frame``
COMPRESS_CHANGE_FRACTION = 0.25

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
    compress: str = "auto",
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
    compress : {"auto", "all", "none"}
        Lossless compression of each channel (LALFrame's DIFF_GZIP, which
        ``FrameAddREAL8TimeSeriesProcData`` applies to every channel). zlib costs a
        fixed ~0.1 ms per channel whatever its length, and continuous float64 series
        (PGLITCH, FAP... of the forest) barely shrink, so ``"auto"`` compresses only
        the channels where fewer than ``COMPRESS_CHANGE_FRACTION`` of the samples
        change (OK, OVL's few levels), which hold most of the saving. At 18 channels
        of 128 Hz (``python -m bench.frame_write``; replayed frames): 1.6-1.9 ms CPU
        per frame instead of 3.0-3.2 ms, files 0.5-4% larger than ``"all"`` (e.g.
        21.2 vs 20.4 KiB); ``"none"``: 1.0 ms, 30 KiB. Readers do not care which.

    A writer of many frames (the timeseries stage) should hold one
    :class:`FrameWriter`: the same bytes, built with less work per frame.
    """
    return FrameWriter(compress).write(path, start, duration, series, sample_rate, provenance)


class FrameWriter:
    """Writes frames as :func:`write_frame` does, reusing LALFrame structures across frames.

    Frames of one stage have the same channels stride after stride, so per channel
    the writer keeps (a) one uncompressed FrProcData whose samples are overwritten
    for every frame, and (b) the last few *compressed* FrProcData by content: a
    channel holding the same samples as before (OK = 1 all stride long, OK = 0 out of
    segments) is not compressed again, and compression (zlib, ~0.1-0.15 ms per
    channel) is most of the cost of building a frame. ``FrameUFrameHFrChanAdd`` deep
    copies a channel into the frame, so a kept channel is never shared with a frame.
    Directories already made are remembered (one ``mkdir`` per directory, not per
    frame). The file is built in memory by FrameL and written with one ``write``
    (:func:`_framel_memory_writer`; ``in_memory = False``: ``lalframe.FrameWrite``).
    The file bytes are those of a fresh build and of ``lalframe.FrameWrite``
    (``tests/common/test_frames.py``).

    Parameters
    ----------
    compress : {"auto", "all", "none"}
        As for :func:`write_frame`.
    keep : int
        Compressed contents kept per channel (most recently used first).
    """

    def __init__(self, compress: str = "auto", keep: int = 4) -> None:
        if compress not in ("auto", "all", "none"):
            raise ValueError(f"compress must be auto, all or none, not {compress!r}")
        self.compress = compress
        self.keep = keep
        # (name, samples, rate) -> (channel, its sample buffer as an array)
        self._plain: dict[tuple[str, int, float], tuple[Any, np.ndarray]] = {}
        # (name, samples, rate) -> [(samples, compressed channel)], most recent first
        self._packed: dict[tuple[str, int, float], list[tuple[bytes, Any]]] = {}
        self._dirs: set[Path] = set()
        self.compressions = 0  # channels compressed (the rest came from the kept ones)
        # build the file in memory and write it at once (False: lalframe.FrameWrite)
        self.in_memory = _FRAMEL is not None
        self._buffer: ctypes.Array[ctypes.c_char] | None = None

    def write(
        self,
        path: str | Path,
        start: float,
        duration: float,
        series: Mapping[str, np.ndarray],
        sample_rate: float,
        provenance: Mapping[str, Any],
    ) -> Path:
        """Write one frame atomically; arguments and result as :func:`write_frame`."""
        path = Path(path)
        parent = path.parent
        if parent not in self._dirs:
            parent.mkdir(parents=True, exist_ok=True)
            self._dirs.add(parent)
        epoch = lal.LIGOTimeGPS(float(start))
        blob = json.dumps({"_idq": 1, **provenance}, sort_keys=True, separators=(",", ":"))
        # the frame header's name carries the provenance: LALFrame can read it back
        frame = lalframe.FrameNew(epoch, float(duration), blob, 0, 0, 0)
        n = round(duration * sample_rate)
        rate = float(sample_rate)
        for name, values in series.items():
            data = np.ascontiguousarray(values, dtype=np.float64)
            if data.shape != (n,):
                raise ValueError(f"{name}: {data.shape[0]} samples, expected {n}")
            lalframe.FrameUFrameHFrChanAdd(frame, self._channel(name, data, rate))
        lalframe.FrameAddFrHistory(frame, "idq", blob)
        # LALFrame stamps history and file records with the wall-clock time (whole
        # seconds), so a re-written stride is equal in name, channels and provenance,
        # not byte for byte.
        tmp = f"{parent}/.{path.name}.tmp{os.getpid()}"
        image = self._image(frame, len(series), n) if self.in_memory else None
        try:
            try:
                self._put(frame, image, tmp)
            except (RuntimeError, FileNotFoundError):
                if parent.is_dir():
                    raise
                # removed since this writer made it (retention, an operator): again
                parent.mkdir(parents=True, exist_ok=True)
                self._put(frame, image, tmp)
            os.replace(tmp, path)
        except (RuntimeError, OSError) as exc:  # LAL reports failures as RuntimeError
            Path(tmp).unlink(missing_ok=True)
            raise FrameError(f"cannot write frame {path}: {exc}") from exc
        return path

    def _image(self, frame: Any, channels: int, samples: int) -> memoryview | None:
        """The file bytes of ``frame`` built in memory by FrameL (a view of this writer's
        buffer, valid until the next frame); None: write it with ``lalframe.FrameWrite``."""
        if _FRAMEL is None:
            return None
        new, write, end = _FRAMEL
        # compressed samples are at most a little larger than raw ones; each channel's
        # structures and TOC entries take ~250 bytes, the frame's dictionary a few KiB
        need = channels * (2 * 8 * samples + 512) + (1 << 16)
        for _ in range(2):
            if self._buffer is None or len(self._buffer) < need:
                self._buffer = ctypes.create_string_buffer(need)
            handle = new(None, -1, self._buffer, len(self._buffer))
            if not handle:
                return None
            status = write(int(frame.this), handle)
            size = end(handle)  # 0: the buffer was too small (FrameL writes nothing past it)
            if status == 0 and size > 0:
                return memoryview(self._buffer)[:size]
            need *= 4
        return None

    @staticmethod
    def _put(frame: Any, image: memoryview | None, tmp: str) -> None:
        if image is None:
            lalframe.FrameWrite(frame, tmp)
            return
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            done = 0
            while done < len(image):
                done += os.write(fd, image[done:])
        finally:
            os.close(fd)

    def _channel(self, name: str, data: np.ndarray, rate: float) -> Any:
        """The FrProcData of ``data`` to add to a frame (kept by this writer, not owned
        by the frame)."""
        n = data.shape[0]
        key = (name, n, rate)
        if self.compress == "all" or (
            self.compress == "auto"
            and np.count_nonzero(data[1:] != data[:-1]) < COMPRESS_CHANGE_FRACTION * n
        ):
            kept = self._packed.setdefault(key, [])
            raw = data.tobytes()  # bytes, not values: -0.0 == 0.0 but is stored apart
            for k, (content, channel) in enumerate(kept):
                if content == raw:
                    if k:
                        kept.insert(0, kept.pop(k))
                    return channel
            channel, samples = _proc_channel(name, n, rate)
            samples[:] = data
            lalframe.FrameUFrChanVectorCompress(channel, lalframe.FRAMEU_FR_VECT_COMPRESS_DIFF_GZIP)
            self.compressions += 1
            kept.insert(0, (raw, channel))
            del kept[self.keep :]
            return channel
        plain = self._plain.get(key)
        if plain is None:
            plain = self._plain[key] = _proc_channel(name, n, rate)
        channel, samples = plain
        samples[:] = data
        return channel


def _proc_channel(name: str, n: int, rate: float) -> tuple[Any, np.ndarray]:
    """An FrProcData time series of ``n`` float64 samples (not filled) and its sample
    buffer as an array (valid while the channel lives and is not compressed), as
    LALFrame's ``XLALFrameAddREAL8TimeSeriesProcData`` builds it (without its
    compression: see :class:`FrameWriter`)."""
    channel = lalframe.FrameUFrProcChanAlloc(
        name,
        lalframe.FRAMEU_FR_PROC_TYPE_TIME_SERIES,
        lalframe.FRAMEU_FR_PROC_SUB_TYPE_UNKNOWN,
        lalframe.FRAMEU_FR_VECT_8R,
        n,
    )
    buffer = _vector_data(int(channel.this))
    if not buffer:
        raise FrameError(f"{name}: LALFrame allocated no sample buffer")
    lalframe.FrameUFrChanSetTimeOffset(channel, 0.0)
    lalframe.FrameUFrChanSetTRange(channel, n / rate)
    lalframe.FrameUFrChanVectorSetName(channel, name)
    lalframe.FrameUFrChanVectorSetDx(channel, 1.0 / rate)
    lalframe.FrameUFrChanVectorSetStartX(channel, 0.0)
    lalframe.FrameUFrChanVectorSetUnitX(channel, "s")
    lalframe.FrameUFrChanVectorSetUnitY(channel, "")  # dimensionless, as LAL spells it
    # a numpy view of LAL's buffer: filling it is a plain array copy, no ctypes call
    samples = np.ctypeslib.as_array((ctypes.c_double * n).from_address(buffer))
    return channel, samples


def read_provenance(path: str | Path) -> dict[str, Any]:
    """The provenance recorded in a frame written by :func:`write_frame`.

    Returns the JSON object stored as the frame header's name: per classifier,
    the ``model_id`` and ``calibration_id`` the products were computed with.

    Raises
    ------
    FrameError
        The file is not a readable frame, or holds no iDQ provenance.

    Notes
    -----
    The name is first looked up in the file's first bytes (:func:`_header_name`, ~60
    us), since LALFrame's ``FrameUFrameHRead`` reads, decompresses and copies every
    channel of the frame (~0.3-0.7 ms) to return it; a file that is not a complete
    little-endian frame goes through LALFrame as before.
    """
    name = _header_name(path)
    if name is None:
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


_RECORD = struct.Struct("<QBBI")  # a structure's length, checksum type, class, instance
_FILE_MAGIC = b"IGWD\x00"
_FRSH = 1  # the class of FrSH, the record naming the class number of each structure


def _header_name(path: str | Path, head: int = 1 << 14) -> str | None:
    """The name of a GWF file's first frame header, from the file's bytes; None when
    the file is not a complete little-endian frame file or the header is not in its
    first ``head`` bytes (the caller then asks LALFrame).

    GWF (LIGO-T970130, version 8): a 40-byte file header, then structures of a 14-byte
    common header (length, checksum type, class, instance) and a body; an FrSH record
    gives the class number of ``FrameH``, whose body starts with its name (a STRING:
    INT_2U length with the NUL, then the characters). The file ends with FrEndOfFile,
    whose ``nBytes`` (28 bytes before the end) is the file's length: a cut file fails.
    """
    try:
        with open(path, "rb") as f:
            buf = f.read(head)
            size = os.fstat(f.fileno()).st_size
            if size < 68:
                return None
            f.seek(size - 28)
            tail = f.read(8)
    except OSError:
        return None
    if buf[:5] != _FILE_MAGIC or buf[12:14] != b"\x34\x12" or len(tail) != 8:
        return None
    if struct.unpack("<Q", tail)[0] != size:  # not a whole frame file
        return None
    pos, frameh = 40, None
    while pos + _RECORD.size + 2 <= len(buf):
        length, _, klass, _ = _RECORD.unpack_from(buf, pos)
        body = pos + _RECORD.size
        (n,) = struct.unpack_from("<H", buf, body)
        if length < _RECORD.size + 2 + n or n == 0 or body + 4 + n > len(buf):
            return None
        text = buf[body + 2 : body + 1 + n]  # without the NUL
        if klass == _FRSH and text == b"FrameH":
            (frameh,) = struct.unpack_from("<H", buf, body + 2 + n)
        elif frameh is not None and klass == frameh:
            try:
                return text.decode()
            except UnicodeDecodeError:
                return None
        pos += length
    return None


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
