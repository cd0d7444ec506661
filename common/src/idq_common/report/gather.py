"""What the HTML report shows, gathered from the topics, the store and the frames.

- quivers topic: evaluated samples (times, labels, ranks) per classifier and model, for
  ROC curves, calibration coverage and the target (glitch) times;
- models and calibrations topics: the history of announcements (ids, times, sample
  counts, FAP floor), and through the store the newest model of each classifier (OVL's
  veto list, the others' channel importances) and calibration (coverage);
- deadletter topic: what could not be used, and why;
- frames: FAP, PGLITCH and OK over the span, and the strides without a frame (gaps).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from idq_common.exceptions import BrokerError, DecodeError, IDQError, InvalidMessageError

log = logging.getLogger(__name__)
#: librdkafka's own log (a FAIL line per connection retry) goes here, silenced: a missing
#: broker is reported once, as a BrokerError
QUIET = logging.getLogger(f"{__name__}.librdkafka")
QUIET.setLevel(logging.CRITICAL)
QUIET.propagate = False


@dataclass
class ClassifierReport:
    """Everything the report knows about one classifier."""

    name: str
    flavor: str
    models: list[dict[str, Any]] = field(default_factory=list)
    calibrations: list[dict[str, Any]] = field(default_factory=list)
    #: model id -> (times, labels, ranks) of its evaluated samples in the span
    samples: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    classifier: Any = None  # the newest model, loaded (Classifier) or None
    calibration: Any = None  # the newest calibration (CalibrationMap) or None
    calibration_model: str | None = None
    load_error: str | None = None
    #: 1-s bins over the span: GPS start, min FAP and max PGLITCH over OK samples, OK fraction
    bins: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class ReportData:
    """The report's inputs over ``[start, end)``."""

    ifo: str
    start: float
    end: float
    classifiers: dict[str, ClassifierReport]
    deadletters: list[dict[str, Any]] = field(default_factory=list)
    glitch_times: np.ndarray = field(default_factory=lambda: np.zeros(0))
    frames: int = 0
    strides: int = 0
    missing_strides: list[tuple[float, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def read_topic(
    consumer_config: Mapping[str, Any],
    topic: str,
    start_ms: int | None = None,
    end_ms: int | None = None,
    timeout: float = 10.0,
) -> list[tuple[int, dict[str, Any]]]:
    """``(timestamp_ms, record)`` of every decodable message, optionally of a time range.

    A range seeks each partition with ``offsets_for_times``; messages after ``end_ms``
    end the partition. Undecodable messages are the dead-letter topic's business.
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

    from idq_common.io.avro import decode

    consumer = Consumer({**consumer_config, "enable.auto.commit": False, "logger": QUIET})
    out: list[tuple[int, dict[str, Any]]] = []
    try:
        try:
            md = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        except KafkaException as exc:
            bootstrap = consumer_config.get("bootstrap.servers")
            raise BrokerError(
                f"no Kafka broker answers at {bootstrap} ({exc.args[0].str()})"
            ) from None
        if md is None or md.error is not None:
            return out
        parts = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.partitions]
        if start_ms is not None:
            parts = [TopicPartition(topic, p, start_ms) for p in md.partitions]
            parts = consumer.offsets_for_times(parts, timeout=timeout)
        ends = {}
        for tp in parts:
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout)
            ends[tp.partition] = high
            if tp.offset == OFFSET_BEGINNING:
                tp.offset = low
        live = [tp for tp in parts if 0 <= tp.offset < ends[tp.partition]]
        todo = {tp.partition for tp in live}
        if not live:
            return out
        consumer.assign(live)
        deadline = time.monotonic() + timeout
        while todo and time.monotonic() < deadline:
            msgs = consumer.consume(500, timeout=0.5)
            if not msgs:
                # transaction markers take offsets too: the last message may end before
                # the high watermark, so ask where the consumer stands
                for tp in consumer.position(live):
                    if tp.offset >= ends[tp.partition]:
                        todo.discard(tp.partition)
                continue
            deadline = time.monotonic() + timeout
            for m in msgs:
                part, offset = m.partition(), m.offset()
                if m.error() or part is None or offset is None or part not in todo:
                    continue
                ts = m.timestamp()[1]
                if offset + 1 >= ends[part] or (end_ms is not None and ts > end_ms):
                    todo.discard(part)
                if end_ms is not None and ts > end_ms:
                    continue
                with contextlib.suppress(DecodeError):
                    out.append((ts, decode(m.value() or b"")[1]))
    finally:
        consumer.close()
    return out


def _load_newest(settings: Any, rep: ClassifierReport) -> None:
    """The newest model and calibration of ``rep`` from the store (sha256 checked)."""
    from idq_common.io.store import ArtifactStore
    from idq_common.science.calibration import CalibrationMap
    from idq_common.science.classifiers.base import Model
    from idq_common.science.classifiers.factory import make_classifier

    params = {c.nickname: c.params for c in settings.classifiers}[rep.name]
    try:
        store = ArtifactStore.from_url(settings.store.url, **settings.store.storage_options())
        if rep.models:
            ann = rep.models[-1]
            model = Model.from_bytes(store.get(ann["uri"], ann["sha256"]))
            clf = make_classifier(rep.name, rep.flavor, params, model.spec)
            clf.model = model
            rep.classifier = clf
        if rep.calibrations:
            ann = rep.calibrations[-1]
            rep.calibration = CalibrationMap.from_bytes(store.get(ann["uri"], ann["sha256"]))
            rep.calibration_model = ann["model_id"]
    except (IDQError, OSError, ValueError, KeyError) as exc:
        rep.load_error = f"{type(exc).__name__}: {exc}"
        log.warning("report: %s: cannot load the newest model or calibration: %s", rep.name, exc)


def _bin_frames(rep: ClassifierReport, window: Any, start: float, end: float) -> None:
    """1-s bins of min FAP / max PGLITCH over OK samples, and the OK fraction."""
    edges = np.arange(np.floor(start), np.ceil(end) + 1.0)
    n = edges.size - 1
    fap, pg, okf = np.full(n, np.nan), np.full(n, np.nan), np.zeros(n)
    if window.times:
        t = np.concatenate(window.times)
        col = {k: np.concatenate(v) for k, v in window.columns.items()}
        idx = np.floor(t - edges[0]).astype(np.int64)
        keep = (idx >= 0) & (idx < n)
        idx, ok = idx[keep], col["OK"][keep] > 0.5
        counts = np.bincount(idx, minlength=n)
        okf = np.bincount(idx, weights=ok.astype(float), minlength=n) / np.maximum(counts, 1)
        f = np.where(ok, col["FAP"][keep], np.inf)
        p = np.where(ok, col["PGLITCH"][keep], -np.inf)
        fmin, pmax = np.full(n, np.inf), np.full(n, -np.inf)
        np.minimum.at(fmin, idx, f)
        np.maximum.at(pmax, idx, p)
        fap = np.where(np.isfinite(fmin), fmin, np.nan)
        pg = np.where(np.isfinite(pmax), pmax, np.nan)
    rep.bins = {"t": edges[:-1], "fap": fap, "pglitch": pg, "ok": okf}


def gather(settings: Any, start: float, end: float, topics: bool = True) -> ReportData:
    """Read everything the report shows over ``[start, end)``.

    Parameters
    ----------
    settings : idq_common.config.Settings
    start, end : float
        GPS span.
    topics : bool
        Read the Kafka topics (False: frames only, e.g. without a broker).
    """
    from idq_common.gpstime import gps_to_kafka_ms
    from idq_common.io.avro.convert import record_to_quiver
    from idq_common.io.frames import find_frames, parse_frame_name
    from idq_common.report.query import read_window_frames

    g, ts, k = settings.general, settings.timeseries, settings.kafka
    reps = {c.nickname: ClassifierReport(c.nickname, c.flavor) for c in settings.classifiers}
    data = ReportData(g.ifo, float(start), float(end), reps)
    if topics:
        cfg = k.consumer_config(f"idq.{g.ifo}.report")
        for _, rec in read_topic(cfg, k.topics.models):
            # trained on data before the span's end (created_gps is wall time: in a
            # replay it is later than the data)
            if rec.get("classifier") in reps and rec["start"] < end:
                reps[rec["classifier"]].models.append(rec)
        for _, rec in read_topic(cfg, k.topics.calibrations):
            if rec.get("classifier") in reps and rec["start"] < end:
                reps[rec["classifier"]].calibrations.append(rec)
        lo_ms, hi_ms = gps_to_kafka_ms(start), gps_to_kafka_ms(end)
        glitches = []
        for _, rec in read_topic(cfg, k.topics.quivers, lo_ms - 600_000, hi_ms):
            rep = reps.get(rec.get("classifier", ""))
            if rep is None or not rec.get("n"):
                continue
            try:
                q = record_to_quiver(rec)
            except InvalidMessageError:
                continue  # dead-lettered by calibrate already
            t, y, r = q.times, q.labels, q.ranks if q.ranks is not None else q.times * np.nan
            inside = (t >= start) & (t < end)
            old = rep.samples.get(rec["model_id"], (np.zeros(0), np.zeros(0, np.int8), np.zeros(0)))
            rep.samples[rec["model_id"]] = (
                np.concatenate([old[0], t[inside]]),
                np.concatenate([old[1], y[inside]]),
                np.concatenate([old[2], r[inside]]),
            )
            glitches.append(t[inside & (y == 1)])
        if glitches:
            data.glitch_times = np.unique(np.concatenate(glitches))
        data.deadletters = [
            {**rec, "payload": len(rec.get("payload") or b"")}
            for _, rec in read_topic(cfg, k.topics.deadletter, lo_ms - 600_000)
        ]
        for rep in reps.values():
            for anns in (rep.models, rep.calibrations):
                anns.sort(key=lambda a: (a["end"], a["created_gps"]))
            _load_newest(settings, rep)
    else:
        data.notes.append("topics not read (--no-topics): no models, quivers or dead letters")
    # frames: the products, and the strides that have none
    files = find_frames(ts.output_dir, g.observatory, ts.description, start, end)
    data.frames = len(files)
    stride = ts.stream.stride
    data.strides = int(np.ceil((end - start) / stride))
    have = {parse_frame_name(p.name)[2] for p in files}
    missing = [t for t in np.arange(start, end, stride) if int(t) not in have]
    data.missing_strides = _merge([(float(t), float(t + stride)) for t in missing])
    windows = read_window_frames(
        ts.output_dir,
        g.observatory,
        ts.description,
        g.ifo,
        list(reps),
        ts.fmin,
        ts.fmax,
        start,
        np.nextafter(end, -np.inf),
        stride=stride,
    )
    for name, rep in reps.items():
        _bin_frames(rep, windows[name], start, end)
    return data


def _merge(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for a, b in spans:
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def roc(times_labels_ranks: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[np.ndarray, ...]:
    """(FAP, efficiency) at every distinct rank threshold, for plotting."""
    _, y, r = times_labels_ranks
    g, c = r[y == 1], r[y == 0]
    if g.size == 0 or c.size == 0:
        return np.zeros(0), np.zeros(0)
    thr = np.unique(r)[::-1]
    fap = (c.size - np.searchsorted(np.sort(c), thr, side="left")) / c.size
    eff = (g.size - np.searchsorted(np.sort(g), thr, side="left")) / g.size
    return fap, eff


def channel_importance(clf: Any) -> tuple[str, list[tuple[str, float]]]:
    """(method, [(channel, importance)]) of a loaded sklearn-based classifier, largest first.

    Tree ensembles: ``feature_importances_`` (mean impurity decrease); linear models:
    |coefficient| on standardised features. A channel's importance is the sum over the
    columns the estimator saw of it (``column_channels``: the learnable columns, the
    ``lag_snr``/signed ones, only those ``witness_select`` kept).
    """
    est = getattr(clf, "_est", None)
    spec = getattr(clf, "_spec", None) or getattr(clf, "feature_spec", None)
    if est is None or spec is None or not hasattr(clf, "column_channels"):
        return "", []
    if hasattr(est, "feature_importances_"):
        method, w = "feature_importances_ (impurity)", np.asarray(est.feature_importances_)
    elif hasattr(est, "coef_"):
        method, w = "|coefficient| (standardised features)", np.abs(np.asarray(est.coef_)).ravel()
    else:
        return "", []
    chans = clf.column_channels()
    if chans.size != w.size:
        log.warning("report: %d importances for %d columns: not shown", w.size, chans.size)
        return "", []
    per = np.bincount(chans, weights=w, minlength=len(spec.channels))
    total = per.sum()
    if total > 0:
        per = per / total
    order = np.argsort(per)[::-1]
    return method, [(spec.channels[i], float(per[i])) for i in order]
