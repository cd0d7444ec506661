"""SNAX / sgnax JSON feature messages made from the synthetic model (seeded).

What a detector site's feature extractor would put on Kafka for the same triggers as
:class:`~idq_common.data.synthetic.SyntheticModel` generates, one message per second:

- ``"sgnax"``: ``{"time": gps, "features": {"<channel>_<flow>_<fhigh>": [row, ...]}}``,
  only channels with rows (sparse); the band suffix is appended to every key;
- ``"snax"``: ``{"timestamp": gps, "features": {"<channel>": [bin x 16]}}``, every
  channel, each 1/16 s bin ``null`` or the loudest row of that bin (SNAX keeps one).

:func:`expected_triggers` is what ``idq-ingest`` must publish for the same span (the
SNAX bin reduction applied, band suffixes kept except on the target channel), so tests
compare whole trigger sets.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence

import numpy as np

from idq_common.data.synthetic import SyntheticModel
from idq_common.data.triggers import TriggerSet

STYLES = ("snax", "sgnax")


def band_suffix(model: SyntheticModel) -> str:
    """The ``_<flow>_<fhigh>`` suffix sgnax appends (the model's band)."""
    return f"_{model.freq_low:g}_{model.freq_high:g}"


def _keys(model: SyntheticModel, style: str) -> list[str]:
    suffix = band_suffix(model) if style == "sgnax" else ""
    return [f"{c}{suffix}" for c in model.channels]


def _snax_reduce(ts: TriggerSet, start: float, rate: int) -> TriggerSet:
    """Keep the loudest row per (channel, 1/rate s bin), as SNAX does."""
    if not len(ts.time):
        return ts
    bins = np.floor((ts.time - start) * rate).astype(np.int64)
    order = np.lexsort((-ts.snr, bins, ts.channel))
    ch, b = ts.channel[order], bins[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (ch[1:] != ch[:-1]) | (b[1:] != b[:-1])
    keep = np.sort(order[first])
    return ts.take(keep)


def second_triggers(
    model: SyntheticModel,
    gps: int,
    style: str,
    rate: int = 16,
    channels: Sequence[int] | None = None,
) -> TriggerSet:
    """The triggers one message of ``style`` carries for GPS second ``gps``.

    ``channels``: indices into ``model.channels`` of one job's channels (default all).
    """
    ts = model.generate(float(gps), float(gps + 1))
    if channels is not None:
        ts = ts.take(np.flatnonzero(np.isin(ts.channel, np.asarray(channels))))
    return _snax_reduce(ts, float(gps), rate) if style == "snax" else ts


def message(
    model: SyntheticModel,
    gps: int,
    style: str,
    rate: int = 16,
    channels: Sequence[int] | None = None,
) -> bytes:
    """One JSON message for GPS second ``gps`` (of one job's ``channels``, default all)."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    ts = second_triggers(model, gps, style, rate, channels)
    keys = _keys(model, style)
    rows: dict[int, list[dict[str, float]]] = {}
    for c, t, s, f in zip(
        ts.channel.tolist(), ts.time.tolist(), ts.snr.tolist(), ts.frequency.tolist(), strict=True
    ):
        rows.setdefault(c, []).append({"time": t, "snr": s, "frequency": f})
    features: dict[str, list[dict[str, float] | None]] = {}
    if style == "sgnax":
        for c in sorted(rows):
            features[keys[c]] = list(rows[c])
        return json.dumps({"time": gps, "features": features}).encode()
    wanted = range(len(keys)) if channels is None else frozenset(channels)
    for c, key in enumerate(keys):
        if c not in wanted:
            continue
        padded: list[dict[str, float] | None] = [None] * rate
        for row in rows.get(c, []):
            padded[min(rate - 1, math.floor((row["time"] - gps) * rate))] = row
        features[key] = padded
    return json.dumps({"timestamp": gps, "features": features}).encode()


def messages(
    model: SyntheticModel,
    start: int,
    end: int,
    style: str,
    rate: int = 16,
    channels: Sequence[int] | None = None,
) -> Iterator[tuple[int, bytes]]:
    """``(gps, payload)`` for every second of ``[start, end)``."""
    for gps in range(int(start), int(end)):
        yield gps, message(model, gps, style, rate, channels)


def expected_triggers(
    model: SyntheticModel, start: int, end: int, style: str, rate: int = 16
) -> TriggerSet:
    """What ``idq-ingest`` publishes for ``[start, end)`` of ``style`` messages.

    Channel names as ingest keeps them (sgnax: band suffix on the auxiliary channels,
    the target's stripped); rows in (time, channel) order.
    """
    keys = _keys(model, style)
    keys[0] = model.target_channel
    parts = []
    for gps in range(int(start), int(end)):
        ts = second_triggers(model, gps, style, rate)
        parts.append(TriggerSet(tuple(keys), ts.channel.copy(), ts.time, ts.snr, ts.frequency))
    merged = TriggerSet.concat(parts) if parts else TriggerSet.empty(tuple(keys))
    return merged.take(np.lexsort((merged.channel, merged.time)))
