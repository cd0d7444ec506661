"""Replicas of a stride-pure stage share the strides through the consumer group.

Two ``idq-timeseries`` processes in one group over a two-partition features topic:
together they write every stride's frame, each does about half, and a replica
stopped mid-run has its strides taken over by the other.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from idq_common.gpstime import gps_now
from idq_common.io.frames import frame_name
from idq_dev.pipeline.local import LocalPipeline, ServiceProcess
from idq_dev.testing.pipeline import pipeline_config

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

DURATION = 192.0


def _frames_by(log: Path) -> set[str]:
    return set(re.findall(r"-> (H-IDQ_TIMESERIES-\d+-1\.gwf)", log.read_text()))


@pytest.fixture(scope="module")
def shared_run(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("shared")
    config, settings = pipeline_config(tmp, kafka_bootstrap, "shared")
    start = float((int(gps_now()) - int(DURATION) - 600) // 64 * 64)
    end = start + DURATION
    pipeline = LocalPipeline(
        config,
        tmp,
        start,
        end,
        speed=8.0,
        producer_args=["--witnesses", "4", "--noise-channels", "12"],
    )
    replicas = []
    for i in range(2):
        base = pipeline.service("timeseries")
        p = ServiceProcess(
            f"timeseries{i}", base.argv, tmp / "logs" / f"timeseries{i}.log", base.env
        )
        p.start()
        replicas.append(p)
    # both in the group before any data: the first assignment already shares the work
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(
        "now does the strides of partitions [" in r.log_path.read_text()
        for r in replicas
        if r.log_path.exists()
    ):
        time.sleep(0.2)
    pipeline.processes["produce"] = pipeline.producer()
    pipeline.processes["produce"].start()
    frames = tmp / "frames"
    # stop the second replica a third of the way: the first must take its strides over
    while len(list(frames.glob("*/*.gwf"))) < DURATION / 3 and time.monotonic() < deadline + 120:
        time.sleep(0.2)
    stopped_status = replicas[1].terminate()
    assert replicas[0].proc is not None
    status = replicas[0].proc.wait(240)
    pipeline.processes["produce"].terminate()
    return {
        "start": start,
        "end": end,
        "frames": frames,
        "replicas": replicas,
        "status": status,
        "stopped_status": stopped_status,
        "settings": settings,
    }


def test_every_stride_has_its_frame(shared_run: dict[str, Any]) -> None:
    assert shared_run["status"] == 0 and shared_run["stopped_status"] == 0
    s = shared_run["settings"]
    expected = {
        frame_name("H", s.timeseries.description, t, 1.0)
        for t in np.arange(shared_run["start"], shared_run["end"], 1.0)
    }
    assert {p.name for p in shared_run["frames"].glob("*/*.gwf")} == expected


def test_the_replicas_shared_the_work(shared_run: dict[str, Any]) -> None:
    first, second = (_frames_by(r.log_path) for r in shared_run["replicas"])
    # while both ran each did only its own partitions' strides
    assert len(second) >= 0.1 * DURATION, "the second replica did almost nothing"
    both = first & second
    assert len(both) <= 0.1 * DURATION, f"{len(both)} strides done twice"
    assert (
        "now does the strides of partitions [0, 1]"
        in shared_run["replicas"][0].log_path.read_text()
    )
