"""Prometheus metrics of a stage and its ``/metrics`` ``/healthz`` ``/readyz`` server.

The metric names are a contract shared with ``deploy/`` (alert rules, dashboards):
docs/ARCHITECTURE.md, "Metrics". Every series carries ``stage`` and ``ifo``;
per-classifier series add ``classifier``.

Each :class:`StageMetrics` owns a dedicated ``CollectorRegistry`` (not the global
default), so several stages, or several tests, can live in one process. Quantities
that grow while nothing happens (latency behind real time, model and calibration age)
are computed at scrape time by a custom collector, so a stalled loop shows up as
growing numbers rather than frozen ones.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from idq_common.gpstime import Clock, WallClock, gps_to_unix

__all__ = ["DEFAULT_LIVENESS_TIMEOUT", "MetricsServer", "StageMetrics"]

#: Seconds without a heartbeat after which ``/healthz`` fails (a training stride can be long).
DEFAULT_LIVENESS_TIMEOUT = 300.0

#: Stride wall-time buckets: sub-second evaluate strides up to multi-minute trainings.
STRIDE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class _AgeCollector(Collector):
    """Scrape-time gauges: latency behind real time, model and calibration age."""

    def __init__(self, owner: StageMetrics) -> None:
        self._owner = owner

    def describe(self) -> list[Any]:
        # describing without sampling keeps registration from calling collect() early
        return list(self._families())

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        base = ["stage", "ifo"]
        return (
            GaugeMetricFamily(
                "idq_latency_seconds",
                "Wall-clock GPS now minus the end of the last processed stride",
                labels=base,
            ),
            GaugeMetricFamily(
                "idq_model_age_seconds",
                "Now minus the creation time of the model in use",
                labels=[*base, "classifier"],
            ),
            GaugeMetricFamily(
                "idq_calibration_age_seconds",
                "Now minus the creation time of the calibration in use",
                labels=[*base, "classifier"],
            ),
        )

    def collect(self) -> Iterator[GaugeMetricFamily]:
        o = self._owner
        now = o.clock.now()
        latency, model_age, cal_age = self._families()
        base = [o.stage, o.ifo]
        with o._lock:
            last_end = o._last_end
            models = dict(o._model_created)
            cals = dict(o._calibration_created)
        if last_end is not None:
            latency.add_metric(base, now - last_end)
        for name, created in sorted(models.items()):
            model_age.add_metric([*base, name], now - created)
        for name, created in sorted(cals.items()):
            cal_age.add_metric([*base, name], now - created)
        yield latency
        yield model_age
        yield cal_age


class StageMetrics:
    """Every contract metric of one stage, plus the state behind the health endpoints.

    Parameters
    ----------
    stage : str
        ``train``, ``evaluate``, ``calibrate`` or ``timeseries``.
    ifo : str
        Instrument, e.g. ``H1``.
    registry : CollectorRegistry, optional
        Where to register; a fresh one by default.
    clock : Clock, optional
        GPS time source for ages, latency and the heartbeat (wall clock by default;
        tests inject a ``ManualClock``).

    Notes
    -----
    The loop counts as alive from construction: the first heartbeat is the start.
    """

    def __init__(
        self,
        stage: str,
        ifo: str,
        registry: CollectorRegistry | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.stage = stage
        self.ifo = ifo
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.clock: Clock = clock if clock is not None else WallClock()
        self._lock = threading.Lock()
        self._last_end: float | None = None
        self._model_created: dict[str, float] = {}
        self._calibration_created: dict[str, float] = {}
        self._model_id: dict[str, str] = {}
        self._calibration_id: dict[str, str] = {}
        self._ready = False
        base = ["stage", "ifo"]
        per_clf = [*base, "classifier"]
        r = self.registry

        def counter(name: str, doc: str, labels: list[str] = base) -> Counter:
            return Counter(name, doc, labels, registry=r)

        def gauge(name: str, doc: str, labels: list[str] = base) -> Gauge:
            return Gauge(name, doc, labels, registry=r)

        self._strides = counter("idq_strides_processed", "Strides done")
        self._stride_seconds = Histogram(
            "idq_stride_processing_seconds",
            "Wall time per stride",
            base,
            registry=r,
            buckets=STRIDE_BUCKETS,
        )
        self._last_end_gauge = gauge(
            "idq_last_stride_end_gps", "GPS end of the last processed stride"
        )
        self._lag = gauge(
            "idq_consumer_lag_messages",
            "High watermark minus committed offset",
            [*base, "topic"],
        )
        self._deadletters = counter(
            "idq_deadletter_messages", "Messages sent to the dead-letter topic", [*base, "reason"]
        )
        self._feature_batches = counter(
            "idq_feature_batches_read",
            "Feature batches read and decoded, per partition of the features topic",
            [*base, "partition"],
        )
        self._gaps = counter("idq_gaps", "Skipped spans published as gaps")
        self._gap_seconds = counter("idq_gap_seconds", "Seconds skipped and published as gaps")
        self._accumulated = gauge(
            "idq_samples_accumulated", "Samples waiting for the next train/calibrate", per_clf
        )
        self._samples = counter("idq_samples", "Samples produced/consumed", [*per_clf, "label"])
        self._models_published = counter("idq_models_published", "Models published", per_clf)
        self._calibrations_published = counter(
            "idq_calibrations_published", "Calibrations published", per_clf
        )
        self._model_info = gauge("idq_model_info", "Id of the model in use", [*per_clf, "id"])
        self._calibration_info = gauge(
            "idq_calibration_info", "Id of the calibration in use", [*per_clf, "id"]
        )
        self._frames = counter("idq_frames_written", "GWF frames written")
        self._ok_fraction = gauge("idq_ok_fraction", "Fraction OK=1 in the latest stride", per_clf)
        self._pglitch_max = gauge(
            "idq_latest_pglitch_max", "Maximum p(glitch) in the latest stride", per_clf
        )
        self._fap_min = gauge("idq_latest_fap_min", "Minimum FAP in the latest stride", per_clf)
        self._heartbeat = gauge(
            "idq_loop_heartbeat_timestamp_seconds", "Unix time the loop last turned"
        )
        self._ready_gauge = gauge("idq_ready", "1 when ready")
        r.register(_AgeCollector(self))

        # series without extra labels exist from the start (0), so rate() and absent()
        # behave before the first stride
        for m in (self._strides, self._gaps, self._gap_seconds, self._frames):
            m.labels(stage, ifo)
        self._stride_seconds.labels(stage, ifo)
        self._ready_gauge.labels(stage, ifo).set(0)
        self._last_heartbeat = self.clock.now()
        self._heartbeat.labels(stage, ifo).set(gps_to_unix(self._last_heartbeat))

    # -- loop ---------------------------------------------------------------------------
    def heartbeat(self) -> None:
        """The loop turned (liveness)."""
        now = self.clock.now()
        with self._lock:
            self._last_heartbeat = now
        self._heartbeat.labels(self.stage, self.ifo).set(gps_to_unix(now))

    def stride_done(self, start: float, end: float, seconds: float, n: int = 1) -> None:
        """``n`` strides ending at GPS ``end`` took ``seconds`` of wall time in all."""
        del start  # part of the call for symmetry with gap(); the end is what matters
        s, i = self.stage, self.ifo
        self._strides.labels(s, i).inc(n)
        self._stride_seconds.labels(s, i).observe(seconds)
        self._last_end_gauge.labels(s, i).set(end)
        with self._lock:
            self._last_end = float(end)

    def gap(self, start: float, end: float) -> None:
        """A span ``[start, end)`` was skipped and published as a gap."""
        self._gaps.labels(self.stage, self.ifo).inc()
        self._gap_seconds.labels(self.stage, self.ifo).inc(max(0.0, end - start))

    def feature_batch(self, partition: int) -> None:
        """One feature batch of ``partition`` was read and decoded."""
        self._feature_batches.labels(self.stage, self.ifo, str(partition)).inc()

    def deadletter(self, reason: str) -> None:
        """One message went to the dead-letter topic (``reason``: a short category)."""
        self._deadletters.labels(self.stage, self.ifo, reason).inc()

    def lag(self, topic: str, n: int) -> None:
        """Consumer lag on ``topic`` in messages."""
        self._lag.labels(self.stage, self.ifo, topic).set(n)

    def set_ready(self, ready: bool) -> None:
        """Readiness: assigned, and holding a model where the stage needs one."""
        with self._lock:
            self._ready = bool(ready)
        self._ready_gauge.labels(self.stage, self.ifo).set(1 if ready else 0)

    # -- samples and artifacts ----------------------------------------------------------
    def declare_classifiers(self, classifiers: Iterable[str]) -> None:
        """Export the per-classifier counters at 0 from the start.

        A counter that first appears at 1 (after a restart, say) is invisible to
        ``increase()``; declared at 0 it is not.
        """
        for name in classifiers:
            for label in ("glitch", "clean"):
                self._samples.labels(self.stage, self.ifo, name, label)
            if self.stage == "train":
                self._models_published.labels(self.stage, self.ifo, name)
            if self.stage == "calibrate":
                self._calibrations_published.labels(self.stage, self.ifo, name)

    def samples(self, classifier: str, label: str, n: int) -> None:
        """``n`` samples of ``label`` (``glitch``/``clean``) produced or consumed."""
        self._samples.labels(self.stage, self.ifo, classifier, label).inc(n)

    def accumulated(self, classifier: str, n: int) -> None:
        """Samples waiting for the next train/calibrate."""
        self._accumulated.labels(self.stage, self.ifo, classifier).set(n)

    def set_model(self, classifier: str, model_id: str, created_gps: float) -> None:
        """The model in use for ``classifier`` (its id and GPS creation time)."""
        self._set_info(
            self._model_info, self._model_id, self._model_created, classifier, model_id, created_gps
        )

    def set_calibration(self, classifier: str, calibration_id: str, created_gps: float) -> None:
        """The calibration map in use for ``classifier``."""
        self._set_info(
            self._calibration_info,
            self._calibration_id,
            self._calibration_created,
            classifier,
            calibration_id,
            created_gps,
        )

    def _set_info(
        self,
        info: Gauge,
        ids: dict[str, str],
        created: dict[str, float],
        classifier: str,
        new_id: str,
        created_gps: float,
    ) -> None:
        with self._lock:
            old = ids.get(classifier)
            ids[classifier] = new_id
            created[classifier] = float(created_gps)
        if old is not None and old != new_id:
            # one info series per classifier: the old id must disappear, not linger at 1
            info.remove(self.stage, self.ifo, classifier, old)
        info.labels(self.stage, self.ifo, classifier, new_id).set(1)

    def model_published(self, classifier: str) -> None:
        """Train published a model."""
        self._models_published.labels(self.stage, self.ifo, classifier).inc()

    def calibration_published(self, classifier: str) -> None:
        """Calibrate published a calibration map."""
        self._calibrations_published.labels(self.stage, self.ifo, classifier).inc()

    # -- products -----------------------------------------------------------------------
    def frame_written(self) -> None:
        """One GWF frame written."""
        self._frames.labels(self.stage, self.ifo).inc()

    def stride_products(
        self, classifier: str, ok_fraction: float, pglitch_max: float, fap_min: float
    ) -> None:
        """Summary of the latest stride's time series for ``classifier``."""
        s, i = self.stage, self.ifo
        self._ok_fraction.labels(s, i, classifier).set(ok_fraction)
        self._pglitch_max.labels(s, i, classifier).set(pglitch_max)
        self._fap_min.labels(s, i, classifier).set(fap_min)

    # -- health -------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """What :meth:`set_ready` last said."""
        with self._lock:
            return self._ready

    def heartbeat_age(self) -> float:
        """Seconds (of the clock) since the last heartbeat."""
        with self._lock:
            last = self._last_heartbeat
        return self.clock.now() - last

    def liveness(self, timeout: float) -> tuple[bool, str]:
        """``(alive, reason)``: alive while the heartbeat is younger than ``timeout``."""
        age = self.heartbeat_age()
        if age < timeout:
            return True, f"ok: heartbeat {age:.1f}s ago"
        return False, f"loop stalled: last heartbeat {age:.1f}s ago (bound {timeout:.1f}s)"

    def exposition(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        m = self.server.metrics
        if path == "/metrics":
            self._send(200, m.exposition(), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            ok, reason = m.liveness(self.server.liveness_timeout)
            self._send(200 if ok else 503, reason.encode() + b"\n")
        elif path == "/readyz":
            ready = m.ready
            self._send(200 if ready else 503, b"ready\n" if ready else b"not ready\n")
        else:
            self._send(404, b"not found: try /metrics /healthz /readyz\n")

    def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # scrapes and probes every few seconds would flood the stage's log
        return


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, addr: tuple[str, int], metrics: StageMetrics, liveness_timeout: float
    ) -> None:
        self.metrics = metrics
        self.liveness_timeout = liveness_timeout
        super().__init__(addr, _Handler)


class MetricsServer:
    """HTTP server on its own port: ``/metrics``, ``/healthz``, ``/readyz``.

    Parameters
    ----------
    host : str
        Address to bind (``127.0.0.1`` locally, ``0.0.0.0`` in a pod).
    port : int
        Port; 0 picks a free one (read :attr:`port` after :meth:`start`).
    metrics : StageMetrics
        What to serve.
    liveness_timeout : float
        ``/healthz`` answers 503 once the heartbeat is this old (clock seconds).
    """

    def __init__(
        self,
        host: str,
        port: int,
        metrics: StageMetrics,
        liveness_timeout: float = DEFAULT_LIVENESS_TIMEOUT,
    ) -> None:
        self.host = host
        self._port = port
        self.metrics = metrics
        self.liveness_timeout = liveness_timeout
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the requested one until :meth:`start`)."""
        if self._httpd is not None:
            return int(self._httpd.server_address[1])
        return self._port

    @property
    def url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> MetricsServer:
        """Bind and serve in a daemon thread; returns self."""
        if self._httpd is not None:
            return self
        self._httpd = _Server((self.host, self._port), self.metrics, self.liveness_timeout)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.2},
            name=f"metrics-{self.metrics.stage}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the socket and join the thread (idempotent)."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> MetricsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
