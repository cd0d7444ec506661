"""Lifecycle of a stage process: signals, metrics server, producer, ordered shutdown.

Signals only set a stop flag (and wake a sleeping clock); the loop checks the flag
between strides, so a stride is either finished and committed or abandoned whole.
Shutdown is ordered: stop the loop, flush the producer, close consumers (an
:class:`~contextlib.ExitStack`: last opened, first closed), then stop the metrics
server (SeldonIO/MLServer style).

The producer is an argument: the factory (:meth:`ServiceRuntime.for_stage`) gives a
Kafka producer, a unit test an in-memory one (``idq_dev.testing.fakes``).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from confluent_kafka import KafkaException, Producer

from idq_common.config import Settings
from idq_common.exceptions import BrokerError
from idq_common.gpstime import Clock, WallClock
from idq_common.io.avro import encode
from idq_common.io.kafka.clients import DeliveryTracker, flush
from idq_common.io.kafka.deadletter import DeadLetterPublisher
from idq_common.metrics import MetricsServer, StageMetrics

log = logging.getLogger(__name__)


class StopFlag:
    """Set by SIGTERM/SIGINT; checked by the stage loop."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._callbacks: list[Callable[[], None]] = []

    def __bool__(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        """Request a stop and wake whatever sleeps."""
        self._event.set()
        for cb in self._callbacks:
            cb()

    def on_set(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the flag is set (e.g. wake a clock)."""
        self._callbacks.append(callback)

    def install(self) -> None:
        """Route SIGTERM and SIGINT to :meth:`set` (main thread only)."""

        def handler(signum: int, frame: FrameType | None) -> None:
            log.info(
                "received %s: finishing the current stride, then stopping",
                signal.Signals(signum).name,
            )
            self.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


@dataclass
class ServiceRuntime:
    """Resources every stage holds, created in order and released in reverse.

    Parameters
    ----------
    stage : str
        Stage name (``train``, ``evaluate``, ``calibrate``, ``timeseries``).
    ifo : str
        Instrument.
    producer : Producer
        Where outputs and dead letters go (a Kafka producer, or an in-memory one in tests).
    deadletter_topic : str
        Where undecodable or unusable input goes.
    metrics_host, metrics_port : str, int
        Where /metrics, /healthz and /readyz are served (port 0: a free port).
    clock : Clock
        The stage's notion of now (wall clock live, data-driven in replay).
    install_signals : bool
        Route SIGTERM/SIGINT to the stop flag (a service process; not a unit test).
    """

    stage: str
    ifo: str
    producer: Producer
    deadletter_topic: str
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0
    clock: Clock = field(default_factory=WallClock)
    stop: StopFlag = field(default_factory=StopFlag)
    install_signals: bool = True

    def __post_init__(self) -> None:
        self._resources = ExitStack()
        self.metrics = StageMetrics(self.stage, self.ifo)
        self.server = MetricsServer(self.metrics_host, self.metrics_port, self.metrics)
        self.server.start()
        # closed last: /metrics and /healthz answer until everything else is down
        self._resources.callback(self.server.stop)
        log.info(
            "%s: metrics on http://%s:%d/metrics", self.stage, self.metrics_host, self.server.port
        )
        self._tracker = DeliveryTracker()
        self.deadletters = DeadLetterPublisher(
            self.producer,
            self.deadletter_topic,
            self.stage,
            on_publish=lambda reason: self.metrics.deadletter(reason.split(":")[0][:60]),
        )
        if self.install_signals and threading.current_thread() is threading.main_thread():
            self.stop.install()
        # the clock may be replaced after start (replay: a data-driven clock), so look it up late
        self.stop.on_set(lambda: getattr(self.clock, "wake", lambda: None)())

    @classmethod
    def for_stage(cls, stage: str, settings: Settings, metrics_port: int | None) -> ServiceRuntime:
        """The runtime of ``stage`` as the configuration describes it.

        ``metrics_port`` (from ``--metrics-port``) overrides ``[metrics] port``.
        """
        runtime = cls(
            stage=stage,
            ifo=settings.general.ifo,
            producer=Producer(settings.kafka.producer_config()),
            deadletter_topic=settings.kafka.topics.deadletter,
            metrics_host=settings.metrics.host,
            metrics_port=settings.metrics.port if metrics_port is None else metrics_port,
        )
        runtime.metrics.declare_classifiers(c.nickname for c in settings.classifiers)
        return runtime

    # -- producing ------------------------------------------------------------------
    def produce(
        self, topic: str, kind: str, record: dict[str, Any], key: str, timestamp_ms: int
    ) -> None:
        """Queue one Avro message; delivery is checked by :meth:`flush`.

        ``timestamp_ms`` is the Unix milliseconds of the data the message carries.
        """
        value = encode(kind, record)
        while True:
            try:
                self.producer.produce(
                    topic,
                    value=value,
                    key=key.encode(),
                    timestamp=timestamp_ms,
                    on_delivery=self._tracker,
                )
                break
            except BufferError:
                # the local queue is full: let deliveries drain, then try again
                self.producer.poll(0.5)
            except KafkaException as exc:
                raise BrokerError(f"cannot produce to {topic!r}: {exc}") from exc
        self.producer.poll(0)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every queued message is acknowledged; raise if any failed.

        Called before committing progress: this is what makes delivery at-least-once.
        """
        tracker, self._tracker = self._tracker, DeliveryTracker()
        flush(self.producer, timeout, tracker)

    # -- shutdown -------------------------------------------------------------------
    def on_close(self, closer: Callable[[], None]) -> None:
        """Close ``closer``'s resource at shutdown, before those registered earlier."""

        def logged() -> None:
            try:
                closer()
            except Exception:  # shutdown must go on
                log.exception("error while closing")

        self._resources.callback(logged)

    def close(self) -> None:
        """Ordered shutdown: flush the producer, close registered resources, stop metrics."""
        try:
            self.producer.flush(10)
        except Exception:  # shutdown must go on
            log.exception("producer flush at shutdown failed")
        self._resources.close()
        log.info("%s: stopped", self.stage)
