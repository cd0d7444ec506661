"""``idq query --source topic`` gives the frames' answer from the timeseries topic."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
import tomli_w
from confluent_kafka import Producer

from idq_common.config import load_settings
from idq_common.gpstime import gps_to_kafka_ms
from idq_common.io.avro import encode
from idq_common.io.avro.convert import timeseries_to_record
from idq_common.report.query import query
from idq_dev.testing.frames import product_columns, write_product_frames

pytestmark = [pytest.mark.kafka]

REPO = Path(__file__).resolve().parents[2]
T0 = 1_400_000_000


def test_topic_and_frames_agree(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic_factory: Callable[..., str]
) -> None:
    topic = kafka_topic_factory("timeseries", partitions=2)
    doc = tomllib.loads((REPO / "etc" / "idq.toml").read_text())
    doc["timeseries"]["output_dir"] = str(tmp_path / "frames")
    doc["kafka"]["bootstrap_servers"] = kafka_bootstrap
    doc["kafka"]["topics"] = {"timeseries": topic}
    (tmp_path / "idq.toml").write_text(tomli_w.dumps(doc))
    settings = load_settings(tmp_path / "idq.toml")
    names = [c.nickname for c in settings.classifiers]
    list(write_product_frames(tmp_path / "frames", "H1", names, T0, T0 + 30, 1.0, 128.0))
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for k in range(30):
        for i, c in enumerate(names):
            cols = product_columns(T0 + k, 1.0, 128.0, 1000 * i)
            rec = timeseries_to_record(
                "H1",
                c,
                T0 + k,
                T0 + k + 1,
                128.0,
                {p.lower(): v for p, v in cols.items()},
                model_id=f"{c}-model",
                calibration_id=f"{c}-cal",
            )
            # a stride sent twice (at-least-once delivery) must not count twice
            for _ in range(2 if k == 12 else 1):
                producer.produce(
                    topic,
                    encode("timeseries_stride", rec),
                    key=f"{c}:{T0 + k}",
                    timestamp=gps_to_kafka_ms(T0 + k),
                )
    producer.flush(30)
    for gps, window in ((T0 + 12.3, 8.0), (T0 + 2.0, 1.0), (T0 + 29.5, 4.0)):
        frames = query(settings, gps, window, source="frames")
        topic_answer = query(settings, gps, window, source="topic")
        assert topic_answer["source"] == "topic"
        for c in names:
            a, b = frames["classifiers"][c], topic_answer["classifiers"][c]
            assert a["samples"] > 0 and a == b, (gps, c)
