"""Ceiling: raw confluent-kafka consumption + fastavro decoding of a features topic.

No reassembly, no windows, no features: poll every message of every partition from
the beginning to the high watermark, decode the Avro body with fastavro, view the
columns as numpy arrays and count trigger rows. This is the most our ingest could do
in Python on this machine; stages are compared against it.
"""

from __future__ import annotations

import io
import json
import time
from typing import Any

import fastavro
import numpy as np
from confluent_kafka import Consumer, TopicPartition

from bench._infra import REPO, RunConfig

HEADER = 10  # C3 01 + 8-byte fingerprint (single-object encoding)


def _schema() -> Any:
    return fastavro.parse_schema(json.loads((REPO / "schemas" / "feature_batch.avsc").read_text()))


def measure(cfg: RunConfig, repeats: int = 1) -> dict[str, Any]:
    """Rows per second of consume + decode over the whole features topic (best of repeats)."""
    from idq_common.config import load_settings

    settings = load_settings(cfg.path, env={})
    schema = _schema()
    best: dict[str, Any] = {}
    for i in range(repeats):
        conf = settings.kafka.consumer_config(f"bench.ceiling.{cfg.name}.{i}.{time.time_ns()}")
        conf.update({"enable.auto.commit": False, "auto.offset.reset": "earliest"})
        consumer = Consumer(conf)
        topic = cfg.topics["features"]
        meta = consumer.list_topics(topic, timeout=10)
        parts = sorted(meta.topics[topic].partitions)
        highs = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in parts
        }
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        remaining = {p for p in parts if highs[p] > 0}
        rows = msgs = nbytes = 0
        t0 = time.monotonic()
        while remaining:
            batch = consumer.consume(500, timeout=2.0)
            if not batch and time.monotonic() - t0 > 300:
                break
            for m in batch:
                if m.error():
                    continue
                value: bytes = m.value() or b""
                rec: Any = fastavro.schemaless_reader(io.BytesIO(value[HEADER:]), schema, None)
                ch = np.frombuffer(rec["channel"], dtype="<i4")
                np.frombuffer(rec["time"], dtype="<f8")
                np.frombuffer(rec["snr"], dtype="<f8")
                np.frombuffer(rec["frequency"], dtype="<f8")
                rows += ch.size
                msgs += 1
                nbytes += len(value)
                part, offset = m.partition() or 0, m.offset() or 0
                if offset + 1 >= highs[part]:
                    remaining.discard(part)
        wall = time.monotonic() - t0
        consumer.close()
        result = {
            "rows_per_s": round(rows / wall, 1) if wall else 0.0,
            "rows": rows,
            "messages": msgs,
            "mib": round(nbytes / 2**20, 1),
            "wall_s": round(wall, 2),
            "mib_per_s": round(nbytes / 2**20 / wall, 1) if wall else 0.0,
            "channels": cfg.channels,
            "topic": topic,
        }
        if not best or result["rows_per_s"] > best["rows_per_s"]:
            best = result
    return best
