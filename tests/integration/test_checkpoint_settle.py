"""A shared checkpoint told the replica count starts once the group has split the
partitions that many ways: at once alone, not after the quiet period (``--replicas``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from idq_common.streaming.checkpoint import Checkpoint

pytestmark = pytest.mark.kafka


def _config(bootstrap: str, group: str) -> dict[str, object]:
    return {"bootstrap.servers": bootstrap, "group.id": group}


def test_one_replica_starts_at_once_two_wait_for_each_other(
    kafka_bootstrap: str, kafka_topic_factory: Callable[..., str]
) -> None:
    topic = kafka_topic_factory("features", partitions=2)
    settle = 8.0  # the quiet period a replica not told the count would wait

    t0 = time.monotonic()
    alone = Checkpoint(
        _config(kafka_bootstrap, f"{topic}.alone"), topic, shared=True, settle=settle, replicas=1
    )
    try:
        assert time.monotonic() - t0 < settle / 2
        assert alone.owned == {0, 1}
    finally:
        alone.close()

    group = f"{topic}.pair"
    made: dict[str, Checkpoint] = {}

    def first() -> None:
        made["a"] = Checkpoint(
            _config(kafka_bootstrap, group), topic, shared=True, settle=settle, replicas=2
        )

    thread = threading.Thread(target=first)
    thread.start()
    try:
        # alone in its group it holds both partitions: more than its share, so it waits
        time.sleep(2.0)
        assert thread.is_alive()
        made["b"] = Checkpoint(
            _config(kafka_bootstrap, group), topic, shared=True, settle=settle, replicas=2
        )
        thread.join(timeout=60)
        assert not thread.is_alive()
        # once the second has joined, each holds one partition
        for _ in range(100):
            if len(made["b"].owned) == 1:
                break
            made["b"].serve(0.2)
        assert sorted(made["a"].owned | made["b"].owned) == [0, 1]
        assert len(made["a"].owned) == len(made["b"].owned) == 1
    finally:
        thread.join(timeout=60)
        for cp in made.values():
            cp.close()
