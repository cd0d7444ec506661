"""Faults and the supervisor that gets services back without a human.

:class:`Supervisor` plays Kubernetes' ``restartPolicy: Always`` for one phase: a
service that exits non-zero (or is killed) is started again after a short backoff,
until it exits 0 (its bounded replay is done). Faults are injected around it:
``kill -9`` at a seeded time or when an output appears (mid-flush / mid-commit),
the broker stopped and restarted, the S3 store frozen (SIGSTOP) for some seconds.
Recovery after each fault is the time until the stage makes progress again, read
from its Prometheus metrics (``/metrics``), never from logs.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from idq_dev.pipeline.local import ServiceProcess
from idq_dev.testing.metrics import scrape

log = logging.getLogger(__name__)

#: seconds before a crashed service is started again (Kubernetes starts at 10 s)
BACKOFF = 1.0


#: the metric whose growth shows a stage is working again
PROGRESS = {
    "ingest": "idq_last_stride_end_gps",
    "train": "idq_last_stride_end_gps",
    "evaluate": "idq_last_stride_end_gps",
    "timeseries": "idq_last_stride_end_gps",
    "calibrate": "idq_loop_heartbeat_timestamp_seconds",
}


@dataclass
class Fault:
    """One injected fault and what it cost."""

    kind: str
    target: str
    at: float  # seconds since the phase started
    detail: str = ""
    recovery_seconds: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "target": self.target,
            "at_s": round(self.at, 2),
            "detail": self.detail,
            "recovery_s": None
            if self.recovery_seconds is None
            else round(self.recovery_seconds, 2),
        }


@dataclass
class Supervisor:
    """Keep one service running until it finishes its bounded run (exit 0)."""

    name: str
    make: Callable[[], ServiceProcess]
    port: int
    proc: ServiceProcess | None = None
    restarts: int = 0
    exits: list[int] = field(default_factory=list)
    done: bool = False
    t0: float = field(default_factory=time.monotonic)
    _restart_at: float | None = None

    def start(self) -> None:
        self.proc = self.make()
        self.proc.start()

    def tick(self) -> None:
        """Restart a dead service (after the backoff); note a finished one."""
        if self.done or self.proc is None or self.proc.proc is None:
            return
        rc = self.proc.proc.poll()
        if rc is None:
            return
        if rc == 0:
            self.done = True
            return
        if self._restart_at is None:
            self.exits.append(rc)
            self._restart_at = time.monotonic() + BACKOFF
            log.warning("%s exited with %s: restarting in %.0f s", self.name, rc, BACKOFF)
        elif time.monotonic() >= self._restart_at:
            self._restart_at = None
            self.restarts += 1
            self.start()

    def kill9(self) -> bool:
        """SIGKILL the whole process group; False if it was not running."""
        if self.proc is None or self.proc.proc is None or self.proc.proc.poll() is not None:
            return False
        os.killpg(self.proc.proc.pid, signal.SIGKILL)
        self.proc.proc.wait()
        return True

    def progress(self) -> float | None:
        return scrape(self.port, PROGRESS[self.name])

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate(timeout=10)


def wait_recovered(
    sup: Supervisor, before: float | None, timeout: float, tick: Callable[[], None]
) -> float | None:
    """Seconds until ``sup`` shows progress beyond ``before`` (or finishes); None on timeout."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        tick()
        if sup.done:
            return time.monotonic() - t0
        value = sup.progress()
        if value is not None and (before is None or value > before):
            return time.monotonic() - t0
        time.sleep(0.2)
    return None
