"""Replicas of a stride-pure stage share the strides through the consumer group.

Two ``idq-timeseries`` processes in one group over a two-partition features topic:
together they write every stride's frame, each does about half, and a replica
stopped mid-run has its strides taken over by the other. The demo configuration
partitions the features by block (``[kafka] partitioner = "block"``): while both run,
each replica reads and decodes the batches of its own partition and only the pad
batches at block edges of the other (``idq_feature_batches_read`` per partition).

Everything is read from what the pipeline publishes, never from its logs: the group's
assignment as the broker reports it, each replica's ``/metrics``, and the timeseries
topic, whose records name the frame they went into (each replica writes its frames to
its own folder, so a record's ``frame_uri`` says which replica did the stride).
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pytest

from idq_common.contracts import group_id
from idq_common.gpstime import gps_now
from idq_common.io.frames import frame_name
from idq_dev.pipeline.local import LocalPipeline
from idq_dev.processes import free_ports
from idq_dev.testing.metrics import scrape, scrape_by
from idq_dev.testing.pipeline import pipeline_config
from idq_dev.testing.topics import group_assignment, read_topic

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

DURATION = 192.0
REPLICAS = ("timeseries0", "timeseries1")


def _wait(what: str, condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def shared_run(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("shared")
    config, settings = pipeline_config(tmp, kafka_bootstrap, "shared")
    kafka, features = settings.kafka, settings.kafka.topics.features
    group = group_id(settings.general.ifo, "timeseries")
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
    ports = dict(zip(REPLICAS, free_ports(len(REPLICAS)), strict=True))
    for name in REPLICAS:
        pipeline.processes[name] = pipeline.service(
            "timeseries",
            ["--metrics-port", str(ports[name])],
            name=name,
            env={"IDQ_TIMESERIES__OUTPUT_DIR": str(tmp / "frames" / name)},
        )
        pipeline.processes[name].start()
    first, second = (pipeline.processes[n] for n in REPLICAS)
    try:
        # both in the group before any data: the first assignment already shares the work
        _wait(
            "both replicas to hold a partition",
            lambda: sorted(map(sorted, group_assignment(kafka, group, features))) == [[0], [1]],
            60,
        )
        pipeline.processes["produce"] = pipeline.producer()
        pipeline.processes["produce"].start()
        # stop the second replica a third of the way: the first must take its strides over
        _wait(
            "a third of the strides",
            lambda: (
                sum(scrape(p, "idq_frames_written_total") or 0 for p in ports.values())
                >= DURATION / 3
            ),
            180,
        )
        done_by_second = scrape(ports[REPLICAS[1]], "idq_frames_written_total") or 0.0
        read = {
            n: scrape_by(ports[n], "idq_feature_batches_read_total", "partition") for n in ports
        }
        stopped_status = second.terminate()
        _wait(
            "the first replica to hold both partitions",
            lambda: group_assignment(kafka, group, features) == [{0, 1}],
            60,
        )
        assert first.proc is not None
        status = first.proc.wait(240)
    finally:
        pipeline.stop()
    records = [m.record for m in read_topic(kafka, settings.kafka.topics.timeseries)]
    return {
        "start": start,
        "end": end,
        "frames": tmp / "frames",
        "records": records,
        "done_by_second": done_by_second,
        "read": read,
        "status": status,
        "stopped_status": stopped_status,
        "settings": settings,
    }


def _strides_by_replica(records: list[dict[str, Any]]) -> dict[str, set[float]]:
    """Stride starts each replica published, told apart by the folder of their frame."""
    out: dict[str, set[float]] = defaultdict(set)
    for r in records:
        assert r["frame_uri"], r
        replica = Path(urlparse(r["frame_uri"]).path).parent.parent.name
        out[replica].add(r["start"])
    return out


def test_every_stride_has_its_frame(shared_run: dict[str, Any]) -> None:
    assert shared_run["status"] == 0 and shared_run["stopped_status"] == 0
    s = shared_run["settings"]
    strides = np.arange(shared_run["start"], shared_run["end"], 1.0)
    expected = {frame_name("H", s.timeseries.description, t, 1.0) for t in strides}
    assert {p.name for p in shared_run["frames"].glob("*/*/*.gwf")} == expected
    # and on the topic: every stride's products
    assert {r["start"] for r in shared_run["records"]} == set(strides.tolist())


def test_the_replicas_shared_the_work(shared_run: dict[str, Any]) -> None:
    by = _strides_by_replica(shared_run["records"])
    assert set(by) <= set(REPLICAS)
    first, second = by[REPLICAS[0]], by[REPLICAS[1]]
    # while both ran each did only its own partitions' strides
    assert shared_run["done_by_second"] >= 0.1 * DURATION, "the second replica did almost nothing"
    assert len(second) >= shared_run["done_by_second"]
    both = first & second
    assert len(both) <= 0.1 * DURATION, f"{len(both)} strides done twice"


def test_the_remaining_replica_took_over(shared_run: dict[str, Any]) -> None:
    by = _strides_by_replica(shared_run["records"])
    after = {t for t in by[REPLICAS[0]] if t > max(by[REPLICAS[1]])}
    # after the second replica stopped the first did the strides of both partitions
    assert {int(t) % 2 for t in after} == {0, 1}
    assert len(after) >= 0.1 * DURATION


def test_each_replica_read_only_its_blocks(shared_run: dict[str, Any]) -> None:
    assert shared_run["settings"].kafka.partitioner == "block"
    own = {}
    for name, read in shared_run["read"].items():
        # batches decoded per partition while both replicas ran
        assert read, f"{name}: no idq_feature_batches_read_total"
        mine = max(read, key=lambda p: read[p])
        other = sum(v for p, v in read.items() if p != mine)
        # the other partition: only the batch holding the pad at each block edge
        assert read[mine] > 0 and other <= 0.3 * read[mine], (name, read)
        own[name] = mine
    assert sorted(own.values()) == ["0", "1"], own
