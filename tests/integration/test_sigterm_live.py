"""SIGTERM stops a live-mode service within seconds, whatever it is waiting for.

Two waits used to hold a stop back until they ran out: the cadence's sleep until the
next stride is due (a whole stride, 30 s or more) and the feature source's wait for
a stride's data (``stream.timeout``). Both must wake on the stop flag.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from idq_common.gpstime import gps_now
from idq_dev.pipeline.local import LocalPipeline, ServiceProcess
from idq_dev.processes import free_port
from idq_dev.testing.metrics import scrape
from idq_dev.testing.pipeline import pipeline_config

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

#: seconds from SIGTERM to exit, interpreter shutdown included; a few seconds on an idle
#: machine, more on a loaded one (the waits themselves used to last a stride or 120 s)
LIMIT = 10.0
DELAY = 1.0


def _live_train(tmp: Path, bootstrap: str, stride: float, tag: str) -> tuple[ServiceProcess, float]:
    """A live ``idq-train`` whose loop is turning; returns it and the latest GPS time its
    first stride can be due at."""

    def edit(doc: dict[str, Any]) -> None:
        doc["train"]["stream"].update(stride=stride, delay=DELAY, timeout=120)

    config, _ = pipeline_config(tmp, bootstrap, tag, edit=edit)
    port = free_port()
    # no span: live mode on the wall clock
    proc = LocalPipeline(config, tmp, None, None).service("train", ["--metrics-port", str(port)])
    proc.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        # the loop's heartbeat: the stage has chosen its start and is running
        if (scrape(port, "idq_loop_heartbeat_timestamp_seconds") or 0.0) > 0:
            # live, a stage starts at the most recent whole stride before now:
            # (now // stride - 1) * stride, so its first stride is due by this time
            return proc, (gps_now() // stride) * stride + DELAY
        assert proc.running, proc.tail()
        time.sleep(0.2)
    raise AssertionError(f"train did not start:\n{proc.tail()}")


def _stop_seconds(proc: ServiceProcess) -> float:
    assert proc.proc is not None
    t0 = time.monotonic()
    proc.proc.send_signal(signal.SIGTERM)
    status = proc.proc.wait(120)
    took = time.monotonic() - t0
    assert status == 0, proc.tail()
    return took


def test_sigterm_during_the_wait_for_a_long_stride(tmp_path: Path, kafka_bootstrap: str) -> None:
    proc, _ = _live_train(tmp_path, kafka_bootstrap, 64.0, "sigwait")
    took = _stop_seconds(proc)
    print(f"SIGTERM during the cadence wait: exit after {took:.1f} s")
    assert took < LIMIT, f"stopped after {took:.1f} s\n{proc.tail()}"


def test_sigterm_while_waiting_for_a_strides_data(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic_factory: Callable[..., str]
) -> None:
    proc, due = _live_train(tmp_path, kafka_bootstrap, 8.0, "sigdata")
    # the first stride is due; no producer runs, so the stage waits for its features
    # (up to stream.timeout = 120 s)
    while gps_now() < due + 3:
        time.sleep(0.2)
    assert proc.running, proc.tail()
    took = _stop_seconds(proc)
    print(f"SIGTERM during the wait for data: exit after {took:.1f} s")
    # exit status 0 (checked by _stop_seconds): a live loop ends only when told to stop
    assert took < LIMIT, f"stopped after {took:.1f} s\n{proc.tail()}"
