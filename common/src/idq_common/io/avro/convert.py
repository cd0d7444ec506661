"""Conversions between in-memory types and Avro records (dicts for the codec).

Numeric columns travel as packed little-endian arrays in ``bytes`` fields
(``schemas/*.avsc`` document the layout). Decoding uses :func:`numpy.frombuffer`,
which does not copy: the arrays returned here are **read-only views** of the
message bytes (copy them before writing in place). Every length is validated;
an inconsistent record raises :class:`~idq_common.exceptions.InvalidMessageError`,
which stages route to the dead-letter topic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from igwn_segments import segment, segmentlist
from numpy.typing import ArrayLike

# io sits above data and science (docs/ARCHITECTURE.md): they never import avro
from idq_common.data.triggers import TriggerSet
from idq_common.exceptions import InvalidMessageError
from idq_common.science.quiver import Quiver

__all__ = [
    "TIMESERIES_COLUMNS",
    "batch_extra",
    "batch_to_triggers",
    "pack",
    "quiver_to_record",
    "record_to_quiver",
    "record_to_segment_update",
    "record_to_segments",
    "record_to_timeseries",
    "segment_update_to_record",
    "segments_to_record",
    "timeseries_to_record",
    "triggers_to_batch",
    "unpack",
]

F8 = np.dtype("<f8")
I4 = np.dtype("<i4")
I1 = np.dtype("i1")
U1 = np.dtype("u1")

#: Timeseries products in wire order; ``ok`` is uint8, the rest float64.
TIMESERIES_COLUMNS: tuple[str, ...] = ("pglitch", "loglike", "fap", "eff", "rank", "ok")


# -- packing -----------------------------------------------------------------------
def pack(values: ArrayLike, dtype: np.dtype[Any] | str) -> bytes:
    """Pack a 1-D array as contiguous bytes of ``dtype`` (explicitly little-endian).

    Parameters
    ----------
    values : array_like
        1-D values.
    dtype : numpy dtype or str
        Wire dtype, e.g. ``'<f8'``.
    """
    arr = np.ascontiguousarray(values, dtype=np.dtype(dtype))
    if arr.ndim != 1:
        raise ValueError(f"expected a 1-D column, got shape {arr.shape}")
    return arr.tobytes()


def unpack(
    record: Mapping[str, Any], field: str, dtype: np.dtype[Any], n: int | None = None
) -> np.ndarray:
    """Read a packed column of a record as a read-only array (no copy).

    Parameters
    ----------
    record : mapping
        Decoded record.
    field : str
        Name of the ``bytes`` field.
    dtype : numpy.dtype
        Wire dtype.
    n : int, optional
        Expected row count.

    Raises
    ------
    InvalidMessageError
        Length not a multiple of the item size, or not ``n`` rows.
    """
    raw = record[field]
    if len(raw) % dtype.itemsize:
        raise InvalidMessageError(
            f"column {field!r} has {len(raw)} bytes, not a multiple of {dtype.itemsize} ({dtype})"
        )
    arr = np.frombuffer(raw, dtype=dtype)
    if n is not None and len(arr) != n:
        raise InvalidMessageError(f"column {field!r} has {len(arr)} rows, expected {n}")
    return arr


# -- feature batches ---------------------------------------------------------------
def triggers_to_batch(
    ts: TriggerSet,
    ifo: str,
    source: str,
    seq: int,
    start: float,
    end: float,
    extra: Mapping[str, ArrayLike] | None = None,
) -> dict[str, Any]:
    """Build a ``feature_batch`` record from a :class:`TriggerSet`.

    Parameters
    ----------
    ts : TriggerSet
        All triggers of ``source`` with time in ``[start, end)`` (completeness is
        the batch's promise; rows outside the span are an error).
    ifo, source : str
        Instrument and producer id.
    seq : int
        Batch sequence number within ``source``.
    start, end : float
        GPS span covered completely.
    extra : mapping of str to array_like, optional
        Further float64 columns (``q``, ``phase``, ``duration``), one value per row.

    Raises
    ------
    InvalidMessageError
        Rows outside ``[start, end)``, or column lengths that disagree.
    """
    n = len(ts.time)
    for name, col in (("channel", ts.channel), ("snr", ts.snr), ("frequency", ts.frequency)):
        if len(col) != n:
            raise InvalidMessageError(f"column {name!r} has {len(col)} rows, time has {n}")
    _check_span(np.asarray(ts.time, dtype=F8), start, end)
    extra_packed: dict[str, bytes] = {}
    for name, values in (extra or {}).items():
        packed = pack(values, F8)
        if len(packed) != 8 * n:
            raise InvalidMessageError(
                f"extra column {name!r} has {len(packed) // 8} rows, expected {n}"
            )
        extra_packed[name] = packed
    return {
        "ifo": ifo,
        "source": source,
        "seq": int(seq),
        "start": float(start),
        "end": float(end),
        "channels": list(ts.channels),
        "channel": pack(ts.channel, I4),
        "time": pack(ts.time, F8),
        "snr": pack(ts.snr, F8),
        "frequency": pack(ts.frequency, F8),
        "extra": extra_packed,
    }


def batch_to_triggers(record: Mapping[str, Any]) -> TriggerSet:
    """Turn a decoded ``feature_batch`` record into a :class:`TriggerSet`.

    The arrays are read-only views of the message bytes (no copy).

    Raises
    ------
    InvalidMessageError
        Columns of different lengths or not whole items, channel indices outside
        the channel table, times outside ``[start, end)`` (or NaN).
    """

    time = unpack(record, "time", F8)
    n = len(time)
    channel = unpack(record, "channel", I4, n)
    snr = unpack(record, "snr", F8, n)
    frequency = unpack(record, "frequency", F8, n)
    channels = tuple(record["channels"])
    # one reduction: a negative index is a large unsigned one
    if n and int(channel.view(np.uint32).max()) >= len(channels):
        raise InvalidMessageError(
            f"channel indices span [{channel.min()}, {channel.max()}] but the table has "
            f"{len(channels)} channels"
        )
    _check_span(time, record["start"], record["end"])
    # a NaN, infinite or negative snr/frequency would win or poison "loudest trigger"
    # comparisons downstream: refused here (NaN fails both comparisons)
    for name, col in (("snr", snr), ("frequency", frequency)):
        if n and not (col.min() >= 0.0 and col.max() < np.inf):
            raise InvalidMessageError(f"{name} spans [{col.min()}, {col.max()}]: not finite >= 0")
    try:
        return TriggerSet(
            channels=channels, channel=channel, time=time, snr=snr, frequency=frequency
        )
    except ValueError as exc:  # e.g. duplicate channel names in the table
        raise InvalidMessageError(f"feature batch is not a valid TriggerSet: {exc}") from exc


def batch_extra(record: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The optional ``extra`` columns of a ``feature_batch`` record as float64 arrays.

    Raises
    ------
    InvalidMessageError
        A column whose row count differs from ``time``'s.
    """
    n = len(record["time"]) // F8.itemsize
    extra = record.get("extra") or {}
    return {name: unpack(extra, name, F8, n) for name in extra}


def _check_span(time: np.ndarray, start: float, end: float) -> None:
    if not (np.isfinite(start) and np.isfinite(end)):
        raise InvalidMessageError(f"batch span [{start}, {end}) is not finite")
    if not start <= end:
        raise InvalidMessageError(f"batch span [{start}, {end}) is inverted")
    # min/max rather than a mask: two passes, no temporary; NaN fails both tests.
    if len(time) and not (time.min() >= start and time.max() < end):
        raise InvalidMessageError(
            f"trigger times span [{time.min()}, {time.max()}], outside the batch span "
            f"[{start}, {end})"
        )


# -- segments ----------------------------------------------------------------------
def segments_to_record(segs: Sequence[Sequence[float]]) -> dict[str, list[float]]:
    """A ``SegmentList`` record (starts, ends) from a segment list."""
    return {"starts": [float(s[0]) for s in segs], "ends": [float(s[1]) for s in segs]}


def record_to_segments(record: Mapping[str, Any]) -> segmentlist:
    """A coalesced :class:`igwn_segments.segmentlist` from a ``SegmentList`` record.

    Raises
    ------
    InvalidMessageError
        Unequal lengths or a segment with end < start.
    """
    starts, ends = record["starts"], record["ends"]
    if len(starts) != len(ends):
        raise InvalidMessageError(f"segment list has {len(starts)} starts and {len(ends)} ends")
    out = segmentlist()
    for s, e in zip(starts, ends, strict=True):
        if not s <= e:
            raise InvalidMessageError(f"segment [{s}, {e}) is inverted")
        out.append(segment(s, e))
    return out.coalesce()


def segment_update_to_record(
    ifo: str,
    flag: str,
    known: Sequence[Sequence[float]],
    active: Sequence[Sequence[float]],
    published_at: float,
) -> dict[str, Any]:
    """Build a ``segment_update`` record."""
    return {
        "ifo": ifo,
        "flag": flag,
        "known": segments_to_record(known),
        "active": segments_to_record(active),
        "published_at": float(published_at),
    }


def record_to_segment_update(record: Mapping[str, Any]) -> tuple[segmentlist, segmentlist]:
    """``(known, active)`` of a ``segment_update`` record; active is clipped to known."""
    known = record_to_segments(record["known"])
    active = record_to_segments(record["active"]) & known
    return known, active


# -- quivers -----------------------------------------------------------------------
def quiver_to_record(quiver: Quiver, ifo: str, seq: int) -> dict[str, Any]:
    """Build a ``quiver`` (EvaluatedQuiver) record; feature vectors are not sent.

    Parameters
    ----------
    quiver : Quiver
        An evaluated quiver (``ranks``, ``classifier`` and ``model_id`` set).
    ifo : str
        Instrument.
    seq : int
        Stride id.

    Raises
    ------
    InvalidMessageError
        No ranks or model id, or columns of different lengths.
    """
    if quiver.ranks is None or not quiver.model_id or not quiver.classifier:
        raise InvalidMessageError(
            "only evaluated quivers (ranks, classifier and model_id set) are sent"
        )
    n = len(quiver.times)
    if len(quiver.labels) != n or len(quiver.ranks) != n:
        raise InvalidMessageError(
            f"quiver columns disagree: {n} times, {len(quiver.labels)} labels, "
            f"{len(quiver.ranks)} ranks"
        )
    return {
        "ifo": ifo,
        "classifier": quiver.classifier,
        "model_id": quiver.model_id,
        "seq": int(seq),
        "start": float(quiver.start),
        "end": float(quiver.end),
        "segments": segments_to_record(quiver.segs),
        "n": n,
        "times": pack(quiver.times, F8),
        "labels": pack(quiver.labels, I1),
        "ranks": pack(quiver.ranks, F8),
    }


def record_to_quiver(record: Mapping[str, Any]) -> Quiver:
    """A :class:`Quiver` from a ``quiver`` record (no feature columns: shape (n, 0)).

    Raises
    ------
    InvalidMessageError
        Columns not of ``n`` rows, labels other than 0/1, bad segments.
    """

    n = int(record["n"])
    times = unpack(record, "times", F8, n)
    labels = unpack(record, "labels", I1, n)
    ranks = unpack(record, "ranks", F8, n)
    if n and not np.isin(labels, (0, 1)).all():
        raise InvalidMessageError("quiver labels must be 0 (clean) or 1 (glitch)")
    # NaN fails both comparisons: a rank calibrate cannot place is refused here
    if n and not (ranks.min() >= 0.0 and ranks.max() <= 1.0):
        raise InvalidMessageError(f"quiver ranks span [{ranks.min()}, {ranks.max()}], not [0, 1]")
    try:
        return Quiver(
            times=times,
            labels=labels,
            features=np.empty((n, 0), dtype=np.float64),
            columns=(),
            ranks=ranks,
            start=float(record["start"]),
            end=float(record["end"]),
            segs=record_to_segments(record["segments"]),
            classifier=record["classifier"],
            model_id=record["model_id"],
        )
    except ValueError as exc:  # e.g. end before start
        raise InvalidMessageError(f"quiver record is not a valid Quiver: {exc}") from exc


# -- timeseries --------------------------------------------------------------------
def _n_samples(start: float, end: float, sample_rate: float) -> int:
    if not (sample_rate > 0 and start <= end):
        raise InvalidMessageError(f"bad stride [{start}, {end}) at {sample_rate} Hz")
    return round((end - start) * sample_rate)


def timeseries_to_record(
    ifo: str,
    classifier: str,
    start: float,
    end: float,
    sample_rate: float,
    columns: Mapping[str, ArrayLike],
    model_id: str | None = None,
    calibration_id: str | None = None,
    frame_uri: str | None = None,
) -> dict[str, Any]:
    """Build a ``timeseries_stride`` record.

    Parameters
    ----------
    columns : mapping
        Every name in :data:`TIMESERIES_COLUMNS`, each with
        ``round((end - start) * sample_rate)`` samples; ``ok`` is cast to uint8
        (nonzero -> 1).

    Raises
    ------
    InvalidMessageError
        A column missing or of the wrong length.
    """
    n = _n_samples(start, end, sample_rate)
    missing = set(TIMESERIES_COLUMNS) - set(columns)
    if missing:
        raise InvalidMessageError(f"timeseries columns missing: {sorted(missing)}")
    out: dict[str, Any] = {
        "ifo": ifo,
        "classifier": classifier,
        "start": float(start),
        "end": float(end),
        "sample_rate": float(sample_rate),
        "model_id": model_id,
        "calibration_id": calibration_id,
        "frame_uri": frame_uri,
    }
    for name in TIMESERIES_COLUMNS:
        col = np.asarray(columns[name])
        if name == "ok":
            col = (col != 0).astype(U1)
        if col.shape != (n,):
            raise InvalidMessageError(
                f"timeseries column {name!r} has shape {col.shape}, expected ({n},)"
            )
        out[name] = pack(col, U1 if name == "ok" else F8)
    return out


def record_to_timeseries(record: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The product columns of a ``timeseries_stride`` record (read-only views).

    Returns
    -------
    dict
        ``pglitch, loglike, fap, eff, rank`` as float64 and ``ok`` as uint8, each
        of ``round((end - start) * sample_rate)`` samples.

    Raises
    ------
    InvalidMessageError
        A column of the wrong length, or ``ok`` values other than 0/1.
    """
    n = _n_samples(record["start"], record["end"], record["sample_rate"])
    out = {name: unpack(record, name, U1 if name == "ok" else F8, n) for name in TIMESERIES_COLUMNS}
    if n and int(out["ok"].max()) > 1:
        raise InvalidMessageError("timeseries 'ok' must be 0 or 1")
    return out
