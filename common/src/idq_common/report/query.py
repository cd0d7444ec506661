"""The alert pipeline's question: min FAP and max PGLITCH with OK = 1 within +-W s of t.

Two sources give the same answer: the GWF frames the timeseries stage writes (found
by name in the LIGO layout, read with LALFrame's stream reader, which is an order of
magnitude faster per file than going through gwpy for a handful of one-second frames)
and the timeseries topic (sought by time with ``offsets_for_times``). Samples with
OK = 0 (outside segments, in gaps, no model or calibration) never count: where none is
OK the answer is ``null``, never a number read from invalid data.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from idq_common.contracts import channel_name
from idq_common.exceptions import FrameError
from idq_common.io.frames import find_frames, frame_path, parse_frame_name, read_provenance

#: products a query reads
QUERY_PRODUCTS = ("FAP", "PGLITCH", "OK")


@dataclass
class Window:
    """Per classifier: the samples of the window, chunk by chunk (a frame or a message).

    ``ids`` holds per chunk the model and calibration ids, or the frame they are
    recorded in: reading a frame's provenance costs as much as reading its data, so
    it is read only for the frame holding the answer.
    """

    times: list[np.ndarray] = field(default_factory=list)
    columns: dict[str, list[np.ndarray]] = field(default_factory=dict)
    ids: list[dict[str, Any] | Path] = field(default_factory=list)

    def add(self, times: np.ndarray, columns: Mapping[str, np.ndarray], ids: dict | Path) -> None:
        self.times.append(times)
        for k, v in columns.items():
            self.columns.setdefault(k, []).append(np.asarray(v, dtype=np.float64))
        self.ids.append(ids)

    def ids_at(self, index: int, classifier: str) -> dict[str, Any]:
        """Model and calibration ids of the chunk holding sample ``index``."""
        sizes = np.cumsum([t.size for t in self.times])
        chunk = int(np.searchsorted(sizes, index, side="right"))
        ids = self.ids[min(chunk, len(self.ids) - 1)]
        if isinstance(ids, Path):
            try:
                ids = dict(read_provenance(ids).get(classifier, {}))
            except FrameError:
                ids = {}
        return {k: ids.get(k) for k in ("model_id", "calibration_id")}


def summarize(win: Window, lo: float, hi: float, classifier: str = "") -> dict[str, Any]:
    """min FAP, max PGLITCH and their GPS times over OK = 1 samples of ``[lo, hi]``."""
    if not win.times:
        return {"min_fap": None, "max_pglitch": None, "samples": 0, "ok_samples": 0}
    t = np.concatenate(win.times)
    col = {k: np.concatenate(v) for k, v in win.columns.items()}
    inside = (t >= lo) & (t <= hi)
    ok = inside & (col["OK"] > 0.5)
    out: dict[str, Any] = {"samples": int(inside.sum()), "ok_samples": int(ok.sum())}
    if not ok.any():
        return {"min_fap": None, "max_pglitch": None, **out}
    i_fap = int(np.flatnonzero(ok)[np.argmin(col["FAP"][ok])])
    i_pg = int(np.flatnonzero(ok)[np.argmax(col["PGLITCH"][ok])])
    return {
        "min_fap": float(col["FAP"][i_fap]),
        "min_fap_gps": float(t[i_fap]),
        "max_pglitch": float(col["PGLITCH"][i_pg]),
        "max_pglitch_gps": float(t[i_pg]),
        **out,
        # the ids the minimum FAP was computed with
        **win.ids_at(i_fap, classifier),
    }


def _candidate_frames(
    directory: Path, observatory: str, description: str, lo: float, hi: float, stride: float | None
) -> list[Path]:
    """The frames of ``[lo, hi]``: by name when the stride is known, else by listing."""
    if stride and float(stride).is_integer() and stride > 0:
        first = math.floor(lo / stride) * stride
        paths = [
            frame_path(directory, observatory, description, s, stride)
            for s in np.arange(first, hi + stride, stride)
            if s <= hi
        ]
        found = [p for p in paths if os.path.exists(p)]
        if found:
            return found
    return find_frames(directory, observatory, description, lo, math.nextafter(hi, math.inf))


def read_window_frames(
    directory: str | Path,
    observatory: str,
    description: str,
    ifo: str,
    classifiers: Sequence[str],
    fmin: float,
    fmax: float,
    lo: float,
    hi: float,
    stride: float | None = None,
) -> dict[str, Window]:
    """FAP, PGLITCH, OK of each classifier over the frames covering ``[lo, hi]``."""
    import lal
    import lalframe

    names = {
        c: {p: channel_name(ifo, p, c, fmin, fmax) for p in QUERY_PRODUCTS} for c in classifiers
    }
    out = {c: Window() for c in classifiers}
    for path in _candidate_frames(Path(directory), observatory, description, lo, hi, stride):
        _, _, start, duration = parse_frame_name(path.name)
        stream = lalframe.FrStreamOpen(str(path.parent), path.name)
        epoch = lal.LIGOTimeGPS(start)
        for c in classifiers:
            cols = {}
            for product, name in names[c].items():
                ts = lalframe.FrStreamReadREAL8TimeSeries(stream, name, epoch, duration, 0)
                cols[product] = np.array(ts.data.data)
            times = start + np.arange(cols["OK"].size) * ts.deltaT
            out[c].add(times, cols, path)
    return out


def read_window_topic(
    consumer_config: Mapping[str, Any],
    topic: str,
    classifiers: Sequence[str],
    lo: float,
    hi: float,
    timeout: float = 10.0,
) -> dict[str, Window]:
    """The same from the timeseries topic: messages whose strides overlap ``[lo, hi]``.

    Messages are timestamped with their stride's start, so the reader seeks each
    partition a generous minute before ``lo`` and stops past ``hi``.
    """
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    from idq_common.exceptions import BrokerError
    from idq_common.gpstime import gps_to_kafka_ms
    from idq_common.io.avro import decode
    from idq_common.io.avro.convert import record_to_timeseries
    from idq_common.report.gather import QUIET

    out = {c: Window() for c in classifiers}
    consumer = Consumer({**consumer_config, "enable.auto.commit": False, "logger": QUIET})
    try:
        try:
            md = consumer.list_topics(topic, timeout=timeout).topics[topic]
        except KafkaException as exc:
            bootstrap = consumer_config.get("bootstrap.servers")
            raise BrokerError(
                f"no Kafka broker answers at {bootstrap} ({exc.args[0].str()})"
            ) from None
        parts = [TopicPartition(topic, p, gps_to_kafka_ms(lo - 60)) for p in md.partitions]
        offsets = consumer.offsets_for_times(parts, timeout=timeout)
        live = [tp for tp in offsets if tp.offset >= 0]
        ends = {}
        for tp in live:
            _, high = consumer.get_watermark_offsets(tp, timeout=timeout)
            ends[tp.partition] = high
        live = [tp for tp in live if tp.offset < ends[tp.partition]]
        consumer.assign(live)
        todo = {tp.partition for tp in live}
        stop_ms = gps_to_kafka_ms(hi)
        while todo:
            msgs = consumer.consume(500, timeout=timeout)
            if not msgs:
                break
            for m in msgs:
                part, offset = m.partition(), m.offset()
                if m.error() or part is None or offset is None or part not in todo:
                    continue
                if m.timestamp()[1] > stop_ms or offset + 1 >= ends[part]:
                    todo.discard(part)
                if m.timestamp()[1] > stop_ms:
                    continue
                _, rec = decode(m.value() or b"")
                if rec.get("classifier") not in out or rec["end"] <= lo or rec["start"] > hi:
                    continue
                cols = record_to_timeseries(rec)
                n = cols["ok"].size
                times = rec["start"] + np.arange(n) / rec["sample_rate"]
                ids = {"model_id": rec.get("model_id"), "calibration_id": rec.get("calibration_id")}
                out[rec["classifier"]].add(
                    times, {"FAP": cols["fap"], "PGLITCH": cols["pglitch"], "OK": cols["ok"]}, ids
                )
    finally:
        consumer.close()
    for win in out.values():
        # a stride sent twice (at-least-once) must not count twice: order and dedupe by time
        if win.times:
            t = np.concatenate(win.times)
            _, keep = np.unique(t, return_index=True)
            cols = {k: np.concatenate(v)[keep] for k, v in win.columns.items()}
            win.times, win.columns = [t[keep]], {k: [v] for k, v in cols.items()}
    return out


def answer(windows: Mapping[str, Window], gps: float, window: float) -> dict[str, Any]:
    """The JSON answer: per classifier and over all classifiers."""
    lo, hi = gps - window, gps + window
    per = {c: summarize(w, lo, hi, c) for c, w in windows.items()}
    faps = [v["min_fap"] for v in per.values() if v["min_fap"] is not None]
    pgs = [v["max_pglitch"] for v in per.values() if v["max_pglitch"] is not None]
    return {
        "gps": gps,
        "window": window,
        "span": [lo, hi],
        "min_fap": min(faps) if faps else None,
        "max_pglitch": max(pgs) if pgs else None,
        "classifiers": per,
    }


def query(
    settings: Any,
    gps: float,
    window: float = 8.0,
    classifiers: Sequence[str] | None = None,
    source: str = "frames",
) -> dict[str, Any]:
    """min FAP and max PGLITCH with OK = 1 within ``[gps - window, gps + window]``.

    Parameters
    ----------
    settings : idq_common.config.Settings
        Where the frames are (``[timeseries]``) or the broker and topic (``[kafka]``).
    gps, window : float
        Centre and half-width of the window, seconds.
    classifiers : sequence of str, optional
        Nicknames; default every configured classifier.
    source : {"frames", "topic"}

    Returns
    -------
    dict
        JSON-serialisable: ``min_fap``/``max_pglitch`` over the classifiers (``None``
        when no sample is OK) and the same per classifier, with the GPS times of the
        extremes, sample counts and the model and calibration ids.
    """
    names = list(classifiers or [c.nickname for c in settings.classifiers])
    known = {c.nickname for c in settings.classifiers}
    unknown = sorted(set(names) - known)
    if unknown:
        raise ValueError(f"unknown classifier(s) {unknown}; configured: {sorted(known)}")
    lo, hi = gps - window, gps + window
    ts = settings.timeseries
    if source == "frames":
        wins = read_window_frames(
            ts.output_dir,
            settings.general.observatory,
            ts.description,
            settings.general.ifo,
            names,
            ts.fmin,
            ts.fmax,
            lo,
            hi,
            stride=ts.stream.stride,
        )
    elif source == "topic":
        wins = read_window_topic(
            settings.kafka.consumer_config("idq.query"),
            settings.kafka.topics.timeseries,
            names,
            lo,
            hi,
        )
    else:
        raise ValueError(f"source must be 'frames' or 'topic', not {source!r}")
    result = answer(wins, gps, window)
    result["source"] = source
    return result
