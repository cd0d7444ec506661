"""AnnouncementTracker on the real broker: a catch-up refresh ends when the start-up
backlog is read (at once on an empty topic), not after its timeout."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import pytest
from confluent_kafka import Producer

from idq_common.stage.announcements import AnnouncementTracker, ModelAnnouncement
from idq_dev.testing.avro_samples import sample_records

pytestmark = pytest.mark.kafka


def _announce(bootstrap: str, topic: str, anns: list[ModelAnnouncement]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for i, ann in enumerate(anns):
        producer.produce(topic, value=ann.encode(), key=ann.classifier, partition=i % 2)
    assert producer.flush(30) == 0


def _tracker(bootstrap: str, topic: str) -> AnnouncementTracker[ModelAnnouncement]:
    cfg = {"bootstrap.servers": bootstrap, "group.id": f"{topic}.tracker"}
    return AnnouncementTracker(cfg, topic, ModelAnnouncement)


def test_catch_up_refresh_returns_with_the_backlog_not_after_its_timeout(
    kafka_bootstrap: str, kafka_topic_factory: Callable[..., str]
) -> None:
    base = ModelAnnouncement.from_record(sample_records()["model_announcement"])
    empty, held = kafka_topic_factory("models", partitions=2), kafka_topic_factory("models", 2)
    anns = [dataclasses.replace(base, model_id=f"m{i}", classifier=f"c{i}") for i in range(7)]
    _announce(kafka_bootstrap, held, anns)

    tracker = _tracker(kafka_bootstrap, empty)
    try:
        t0 = time.monotonic()
        assert tracker.refresh(timeout=5.0) == 0
        assert time.monotonic() - t0 < 2.0  # nothing held: no wait for the timeout
        # later refreshes wait for what is new
        _announce(kafka_bootstrap, empty, anns[:1])
        assert tracker.wait_for(lambda: "m0" in tracker.by_id, timeout=20.0)
    finally:
        tracker.close()

    tracker = _tracker(kafka_bootstrap, held)
    try:
        t0 = time.monotonic()
        assert tracker.refresh(timeout=10.0) == len(anns)  # every one, in one call
        assert time.monotonic() - t0 < 5.0
        assert set(tracker.by_id) == {a.model_id for a in anns}
    finally:
        tracker.close()
