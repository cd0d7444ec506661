"""Pytest plugin: one real Kafka broker for the whole test session.

Register with ``pytest_plugins = ["idq_dev.testing.kafka_broker"]`` (tests/conftest.py).

Fixtures
--------
kafka_bootstrap (session)
    ``"127.0.0.1:port"`` of a ready broker. If ``$IDQ_TEST_BOOTSTRAP`` names a broker
    that answers an admin client, it is used; otherwise ONE :class:`LocalBroker` is
    started in a temporary folder on a free port and stopped at the end of the session.
    The broker is started lazily: a run that selects no Kafka test starts nothing.
kafka_admin_config (session)
    ``{"bootstrap.servers": ...}`` for AdminClient/Producer.
kafka_topic_factory (function)
    ``make(kind="t", partitions=1, config=None) -> name``: creates a uniquely named topic
    (tests never share topics, so they can run in any order on the one broker).
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from idq_common.io.kafka.topics import NO_TIME_RETENTION, TopicSpec, create_topics
from idq_dev.broker import LocalBroker, admin_lists_topics

BOOTSTRAP_ENV = "IDQ_TEST_BOOTSTRAP"
RETENTION_CHECK = "log.retention.check.interval.ms"
#: the session broker's retention check interval (a broker from $IDQ_TEST_BOOTSTRAP: its own)
RETENTION_CHECK_MS = 1000
_counter = itertools.count()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap address of the session's Kafka broker (see module docstring)."""
    given = os.environ.get(BOOTSTRAP_ENV)
    if given:
        if not admin_lists_topics(given, timeout=10.0):
            pytest.fail(f"${BOOTSTRAP_ENV}={given} does not answer an admin client")
        yield given
        return
    data_dir = Path(tempfile.mkdtemp(prefix="idq-test-kafka-"))
    # tied to this process: a killed test run leaves no broker behind
    # retention checks every second (default 5 min) so retention tests need not wait long;
    # topics made without a retention.ms keep everything: tests publish data stamped with
    # old GPS times, which a time-retained topic would now lose within a second
    broker = LocalBroker(
        data_dir,
        tie_to_parent=True,
        extra_props={RETENTION_CHECK: str(RETENTION_CHECK_MS), "log.retention.ms": "-1"},
    )
    t0 = time.monotonic()
    try:
        broker.start()
    except Exception:
        shutil.rmtree(data_dir, ignore_errors=True)
        raise
    print(f"\n[kafka] test broker at {broker.bootstrap} ready in {time.monotonic() - t0:.1f} s")
    try:
        yield broker.bootstrap
    finally:
        broker.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka_admin_config(kafka_bootstrap: str) -> dict[str, Any]:
    """librdkafka dictionary reaching the session broker."""
    return {"bootstrap.servers": kafka_bootstrap}


@pytest.fixture
def kafka_topic_factory(
    kafka_admin_config: dict[str, Any], request: pytest.FixtureRequest
) -> Callable[..., str]:
    """Factory creating uniquely named topics on the session broker."""
    test = "".join(c if c.isalnum() else "-" for c in request.node.name)[:60]

    def make(kind: str = "t", partitions: int = 1, config: dict[str, str] | None = None) -> str:
        name = f"test.{test}.{kind}.{next(_counter)}.{uuid.uuid4().hex[:8]}"
        config = {**NO_TIME_RETENTION, **(config or {})}  # see kafka_bootstrap
        create_topics(kafka_admin_config, [TopicSpec(name, partitions, 1, config)])
        return name

    return make
