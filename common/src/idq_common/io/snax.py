"""SNAX / sgnax JSON feature messages -> :class:`TriggerSet` (what ``idq-ingest`` reads).

Two envelopes exist on the detector sites' Kafka (DOMAIN.md, "Inputs"), one message
per ``message_seconds`` (1 s) of data:

- SNAX (older): ``{"timestamp": <gps>, "features": {"<channel>": [bin, ...]}}`` where
  every channel has exactly ``rate * message_seconds`` bins (16 Hz: 16), each ``null``
  (nothing in that bin) or one row;
- sgnax: ``{"time": <gps>, "features": {"<channel>_<flow>_<fhigh>": [row, ...]}}`` with
  only the rows there are (sparse).

A row is an object with ``time`` (``trigger_time`` accepted), ``snr`` and ``frequency``,
and optionally ``q``, ``phase``, ``duration``. Channel keys are kept as they come (band
suffix included: each band is its own feature channel), except that a key naming the
target channel plus a band suffix is published as the target channel.

Everything wrong with a message raises :class:`IngestRejected` with a ``reason`` whose
part before ``':'`` is one of :data:`REASONS` (the dead-letter metric label).
:func:`parse_message` is pure: the order checks (duplicate or out-of-order seconds)
live in :class:`SecondTracker`, which the service keeps across messages.
"""

from __future__ import annotations

import gc
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np
import orjson

from idq_common.data.triggers import TriggerSet
from idq_common.exceptions import InvalidMessageError

__all__ = [
    "EXTRA_COLUMNS",
    "REASONS",
    "IngestRejected",
    "JsonFormat",
    "ParsedMessage",
    "SecondTracker",
    "parse_message",
]

#: Dead-letter reason labels (the text before ``':'`` of a reason).
REASONS: tuple[str, ...] = (
    "bad_json",
    "bad_envelope",
    "bad_value",
    "bad_channel",
    "duplicate",
    "out_of_order",
)

#: Optional row columns carried to the feature batch's ``extra`` columns.
EXTRA_COLUMNS: tuple[str, ...] = ("q", "phase", "duration")

#: Columns that must not be negative (phase may be).
_NON_NEGATIVE = ("time", "snr", "frequency", "q", "duration")

_BAND = re.compile(r"_[0-9]+_[0-9]+$")


class IngestRejected(InvalidMessageError):
    """A JSON feature message that cannot be used; ``reason`` goes to the dead letter."""

    def __init__(self, label: str, detail: str) -> None:
        if label not in REASONS:
            raise ValueError(f"unknown reason label {label!r}")
        self.label = label
        self.reason = f"{label}: {detail}"
        super().__init__(self.reason)


@dataclass(frozen=True)
class JsonFormat:
    """How to read messages.

    Parameters
    ----------
    ifo : str
        Instrument; every channel must belong to it.
    target_channel : str
        A key ``<target>_<flow>_<fhigh>`` is renamed to this.
    format : {"auto", "snax", "sgnax"}
        ``auto`` recognises the envelope by its time key.
    channel_pattern : str
        Regular expression each channel key must match in full.
    message_seconds : float
        Span of one message; its time must be a multiple of it.
    snax_rate : int
        SNAX bins per second.
    """

    ifo: str
    target_channel: str
    format: str = "auto"
    channel_pattern: str = r"^[A-Z][0-9]:[A-Z0-9]+-[A-Za-z0-9_]+$"
    message_seconds: float = 1.0
    snax_rate: int = 16

    def __post_init__(self) -> None:
        if self.format not in ("auto", "snax", "sgnax"):
            raise ValueError(f"format must be auto, snax or sgnax, got {self.format!r}")
        object.__setattr__(self, "_pattern", re.compile(self.channel_pattern))
        object.__setattr__(self, "_names", {})
        object.__setattr__(self, "_layouts", {})

    @property
    def bins(self) -> int:
        """SNAX bins per message."""
        return round(self.snax_rate * self.message_seconds)

    def channel(self, key: Any) -> str:
        """The feature channel name of a message key (cached), or raise ``bad_channel``."""
        names: dict[str, str] = self._names  # type: ignore[attr-defined]
        if isinstance(key, str) and key in names:
            return names[key]
        if not isinstance(key, str) or not self._pattern.fullmatch(key):  # type: ignore[attr-defined]
            raise IngestRejected("bad_channel", f"channel key {str(key)[:120]!r} is malformed")
        if not key.startswith(self.ifo + ":"):
            raise IngestRejected("bad_channel", f"channel {key!r} is not of instrument {self.ifo}")
        name = self.target_channel if _BAND.sub("", key) == self.target_channel else key
        if len(names) < 100_000:  # bounded: garbled names must not grow it without end
            names[key] = name
        return name

    def layout(self, keys: tuple[Any, ...]) -> tuple[str, ...] | None:
        """The channel names of a message's keys, when every key is valid and no two
        name the same channel; else None (the checked path then finds the reason).

        Cached per key tuple: an extractor job sends the same keys every second (SNAX
        every channel; sgnax nearly every one at 16 rows/s), so each second costs one
        tuple lookup instead of a validation per key.
        """
        layouts: dict[tuple[Any, ...], tuple[str, ...]] = self._layouts  # type: ignore[attr-defined]
        found = layouts.get(keys)
        if found is not None:
            return found
        try:
            names = tuple(self.channel(k) for k in keys)
        except IngestRejected:
            return None
        if len(set(names)) != len(names):
            return None
        if len(layouts) >= 64:  # bounded: a few jobs' layouts, plus sparse variations
            layouts.clear()
        layouts[keys] = names
        return names


@dataclass(frozen=True)
class ParsedMessage:
    """One accepted message: its span, its triggers and the optional columns."""

    format: str
    start: float
    end: float
    triggers: TriggerSet
    extra: Mapping[str, np.ndarray]


def parse_message(
    payload: bytes | str | None, fmt: JsonFormat, *, fast: bool = True
) -> ParsedMessage:
    """Decode and validate one JSON feature message.

    ``fast=False`` takes the row-by-row checked path for everything (what the fast path
    falls back to whenever anything is unusual, so reasons are the same); the two give
    identical results, which the tests compare on generated corpora.

    Raises
    ------
    IngestRejected
        ``bad_json`` (not JSON, not an object), ``bad_envelope`` (no or both time keys,
        a format other than the configured one, a bad time, no ``features`` object, a
        SNAX channel without its bins), ``bad_channel`` (a malformed key, another
        instrument, the same channel twice), ``bad_value`` (a row that is not an object
        of numbers, non-finite or negative values, a time outside the message's span).
    """
    # A JSON tree holds no reference cycles, so the cyclic collector's passes while
    # orjson builds ~5,000 containers per message find nothing: measured ~20% of the
    # decode time. Reference counting still frees everything.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _parse(payload, fmt, fast)
    finally:
        if enabled:
            gc.enable()


def _parse(payload: bytes | str | None, fmt: JsonFormat, fast: bool) -> ParsedMessage:
    if payload is None:
        raise IngestRejected("bad_json", "empty message")
    try:
        # orjson: ~5x the standard library's speed, and parsing is most of ingest's time
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        # orjson refuses NaN/Infinity literals and overflowing numbers; the standard
        # library reads them as non-finite floats, so the reason can say what is wrong
        try:
            doc = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            raise IngestRejected("bad_json", f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise IngestRejected("bad_json", f"expected a JSON object, got {type(doc).__name__}")
    kind, gps = _envelope(doc, fmt)
    start = float(gps)
    end = start + fmt.message_seconds
    features = doc.get("features")
    if not isinstance(features, dict):
        raise IngestRejected("bad_envelope", "no 'features' object")
    rows = (_rows(features, kind, fmt) if fast else None) or _rows_checked(features, kind, fmt)
    triggers, extra = (_columns(rows, start, end) if fast else None) or _columns_checked(
        rows, start, end
    )
    return ParsedMessage(kind, start, end, triggers, extra)


def _envelope(doc: dict[str, Any], fmt: JsonFormat) -> tuple[str, float]:
    has_snax, has_sgnax = "timestamp" in doc, "time" in doc
    if has_snax == has_sgnax:
        raise IngestRejected(
            "bad_envelope",
            "both 'timestamp' and 'time'"
            if has_snax
            else "no 'timestamp' (SNAX) or 'time' (sgnax)",
        )
    kind = "snax" if has_snax else "sgnax"
    if fmt.format != "auto" and kind != fmt.format:
        raise IngestRejected("bad_envelope", f"a {kind} message, but ingest.format is {fmt.format}")
    gps = doc["timestamp" if has_snax else "time"]
    if isinstance(gps, bool) or not isinstance(gps, int | float) or not math.isfinite(gps):
        raise IngestRejected("bad_envelope", f"time {gps!r} is not a finite number")
    if gps <= 0:
        raise IngestRejected("bad_envelope", f"time {gps!r} is not a GPS time")
    k = gps / fmt.message_seconds
    if abs(k - round(k)) > 1e-6:
        raise IngestRejected(
            "bad_envelope", f"time {gps!r} is not a multiple of {fmt.message_seconds:g} s"
        )
    return kind, float(gps)


#: channel table, per-row channel index (int32) and the row objects, in message order
_Rows = tuple[list[str], np.ndarray, list[Any]]


def _rows(features: dict[str, Any], kind: str, fmt: JsonFormat) -> _Rows | None:
    """:func:`_rows_checked`'s result for a well-formed message, else None.

    Whole-message operations instead of per-channel Python work: the key layout is
    validated once per distinct key tuple, rows are flattened with one C-level chain and
    the per-row channel index is an ``np.repeat`` of the channels' row counts.
    """
    names = fmt.layout(tuple(features))
    if names is None:
        return None
    values = list(features.values())
    if values and set(map(type, values)) != {list}:
        return None
    if kind == "snax":
        bins = fmt.bins
        if values and set(map(len, values)) != {bins}:
            return None
        counts = [bins - v.count(None) for v in values]
        rows = [r for r in chain.from_iterable(values) if r is not None]
    else:
        counts = list(map(len, values))
        rows = list(chain.from_iterable(values))
    channels = [name for name, c in zip(names, counts, strict=True) if c]
    chan_of_row = np.repeat(np.arange(len(channels), dtype=np.int32), [c for c in counts if c])
    return channels, chan_of_row, rows


def _rows_checked(features: dict[str, Any], kind: str, fmt: JsonFormat) -> _Rows:
    """Channel table, per-row channel index and the row objects, in message order;
    every key and value checked one by one (raises the reason)."""
    channels: list[str] = []
    index: dict[str, int] = {}
    chan_of_row: list[int] = []
    rows: list[Any] = []
    bins = fmt.bins
    for key, value in features.items():
        name = fmt.channel(key)
        if name in index:
            raise IngestRejected("bad_channel", f"channel {name!r} appears twice (key {key!r})")
        if not isinstance(value, list):
            raise IngestRejected(
                "bad_envelope", f"channel {key!r}: expected a list, got {type(value).__name__}"
            )
        if kind == "snax":
            if len(value) != bins:
                raise IngestRejected(
                    "bad_envelope", f"channel {key!r} has {len(value)} bins, expected {bins}"
                )
            value = [r for r in value if r is not None]
        if not value:
            continue  # a quiet channel: nothing to publish, the batch still covers it
        i = len(channels)
        index[name] = i
        channels.append(name)
        chan_of_row.extend([i] * len(value))
        rows.extend(value)
    return channels, np.asarray(chan_of_row, dtype=np.int32), rows


_CORE = ("time", "snr", "frequency")
_GETTERS = {c: itemgetter(c) for c in (*_CORE, *EXTRA_COLUMNS)}


def _columns(
    parsed: _Rows, start: float, end: float
) -> tuple[TriggerSet, dict[str, np.ndarray]] | None:
    """:func:`_columns_checked`'s result when every row is an object of plain numbers
    that passes every check, else None (the checked path then finds the reason).

    Each column is one C-level ``map(itemgetter)`` pass, one type pass and one
    ``np.fromiter``; the value checks run once over all columns.
    """
    channels, chan_of_row, rows = parsed
    n = len(rows)
    if not n or set(map(type, rows)) != {dict}:
        return None
    # an optional column travels when every row has it; decided by the first row, and
    # a row without it (KeyError) sends the message to the checked path
    names = [*_CORE, *(c for c in EXTRA_COLUMNS if c in rows[0])]
    cols: dict[str, np.ndarray] = {}
    try:
        for name in names:
            values = list(map(_GETTERS[name], rows))
            if not set(map(type, values)) <= _NUMBER_TYPES:
                return None
            cols[name] = np.fromiter(values, dtype=np.float64, count=n)
    except (KeyError, OverflowError):
        return None
    for name, arr in cols.items():
        if not np.isfinite(arr).all() or (name in _NON_NEGATIVE and arr.min() < 0):
            return None
    time = cols["time"]
    if not (time.min() >= start and time.max() < end):
        return None
    ts = TriggerSet(
        channels=tuple(channels),
        channel=chan_of_row,
        time=time,
        snr=cols["snr"],
        frequency=cols["frequency"],
    )
    return ts, {c: cols[c] for c in names[len(_CORE) :]}


def _columns_checked(
    parsed: _Rows, start: float, end: float
) -> tuple[TriggerSet, dict[str, np.ndarray]]:
    # Column-wise comprehensions and type sets run at C speed; this is the hot path
    # (16,000 rows per second at 1,000 channels).
    channels, chan_of_row, rows = parsed
    n = len(rows)
    if set(map(type, rows)) - {dict}:
        bad = next(r for r in rows if type(r) is not dict)
        raise IngestRejected("bad_value", f"a row is {type(bad).__name__}, not an object")
    time_values = [r.get("time") for r in rows]
    if None in time_values:  # older SNAX spelled it trigger_time
        time_values = [r.get("time", r.get("trigger_time")) for r in rows]
    arrays = {
        "time": _floats("time", time_values),
        "snr": _floats("snr", [r.get("snr") for r in rows]),
        "frequency": _floats("frequency", [r.get("frequency") for r in rows]),
    }
    out_extra: dict[str, np.ndarray] = {}
    for c in EXTRA_COLUMNS:
        if not n or c not in rows[0]:
            continue  # absent from one row: the column does not travel (no full pass)
        values = [r.get(c) for r in rows]
        # an optional column travels only when every row has it (no invented values)
        if n and None not in values:
            out_extra[c] = _floats(c, values)
    for name, arr in (*arrays.items(), *out_extra.items()):
        if not np.isfinite(arr).all():
            raise IngestRejected("bad_value", f"non-finite {name}")
        if name in _NON_NEGATIVE and n and arr.min() < 0:
            raise IngestRejected("bad_value", f"negative {name} {arr.min():g}")
    time = arrays["time"]
    if n and not (time.min() >= start and time.max() < end):
        raise IngestRejected(
            "bad_value",
            f"trigger times [{time.min():.4f}, {time.max():.4f}] outside the message's "
            f"span [{start:g}, {end:g})",
        )
    ts = TriggerSet(
        channels=tuple(channels),
        channel=np.asarray(chan_of_row, dtype=np.int32),
        time=time,
        snr=arrays["snr"],
        frequency=arrays["frequency"],
    )
    return ts, out_extra


_NUMBER_TYPES = frozenset({float, int})


def _floats(name: str, values: list[Any]) -> np.ndarray:
    # exact types: bool is an int subclass and numpy would parse strings; refuse both
    if set(map(type, values)) - _NUMBER_TYPES:
        bad = next(v for v in values if type(v) not in _NUMBER_TYPES)
        what = "missing" if bad is None else f"{str(bad)[:60]!r} is not a number"
        raise IngestRejected("bad_value", f"{name} {what}")
    try:
        return np.asarray(values, dtype=np.float64)
    except OverflowError:  # an integer beyond float range (the stdlib reads it exactly)
        raise IngestRejected("bad_value", f"{name}: a number too large for a float") from None


class SecondTracker:
    """Refuses a message whose span starts at or before the last accepted one.

    Parameters
    ----------
    last : float, optional
        Start of the last accepted message (restored from the committed offsets).
    """

    def __init__(self, last: float | None = None) -> None:
        self.last = last

    def check(self, start: float) -> None:
        """Raise ``duplicate`` or ``out_of_order`` unless ``start`` is new; else remember it."""
        if self.last is not None:
            if start == self.last:
                raise IngestRejected("duplicate", f"second {start:.0f} was already ingested")
            if start < self.last:
                raise IngestRejected(
                    "out_of_order", f"second {start:.0f} arrived after {self.last:.0f}"
                )
        self.last = start
