"""The real local Kafka broker: session fixture, `idq kafka` CLI, round trip with seek by GPS."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition

from idq_common.cli.main import main
from idq_common.exceptions import BrokerError
from idq_common.gpstime import gps_to_kafka_ms, kafka_ms_to_gps
from idq_common.io.kafka.clients import (
    DeliveryTracker,
    flush,
    make_consumer,
    make_producer,
    poll_messages,
    produce_sync,
    seek_to_time,
    wait_for_assignment,
)
from idq_dev.broker import LocalBroker, admin_lists_topics, free_port
from idq_dev.jars import jars_ready

pytestmark = pytest.mark.kafka

GPS0 = 1_400_000_000.0


def test_session_broker_answers_admin_client(kafka_bootstrap: str) -> None:
    host, port = kafka_bootstrap.rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0
    assert admin_lists_topics(kafka_bootstrap, timeout=10)


def test_cli_up_status_down_second_broker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`idq kafka up/status/down` through main() on a second broker, warm jars."""
    assert jars_ready(), "the session broker fetched the jars already"
    data = tmp_path / "kafka"
    port = free_port()
    t0 = time.monotonic()
    rc = main(["kafka", "up", "--data-dir", str(data), "--port", str(port)])
    elapsed = time.monotonic() - t0
    out, err = capsys.readouterr()
    assert rc == 0, f"idq kafka up failed:\n{out}\n{err}"
    assert f"bootstrap 127.0.0.1:{port}" in out and "started in" in out
    # with cached jars a cold data dir (format + start) must be quick on a small machine
    assert elapsed <= 30.0, f"broker took {elapsed:.1f} s to get ready"
    try:
        # idempotent: a second `up` finds it and says so
        assert main(["kafka", "up", "--data-dir", str(data)]) == 0
        assert "already up" in capsys.readouterr().out
        assert main(["kafka", "status", "--data-dir", str(data), "--json"]) == 0
        status = json.loads(capsys.readouterr().out)
        assert status["ready"] and status["port"] == port and status["pid"] > 0
        assert admin_lists_topics(f"127.0.0.1:{port}")
        assert (data / "broker.log").stat().st_size > 0
        heap = (Path(f"/proc/{status['pid']}/cmdline").read_bytes()).split(b"\0")
        assert b"-Xmx512m" in heap
    finally:
        assert main(["kafka", "down", "--data-dir", str(data)]) == 0
    assert "kafka stopped" in capsys.readouterr().out
    assert main(["kafka", "status", "--data-dir", str(data)]) == 1
    assert "kafka down" in capsys.readouterr().out
    assert not admin_lists_topics(f"127.0.0.1:{port}", timeout=1)
    assert main(["kafka", "down", "--data-dir", str(data)]) == 0
    assert "not running" in capsys.readouterr().out


def test_port_in_use_is_refused(kafka_bootstrap: str, tmp_path: Path) -> None:
    port = int(kafka_bootstrap.rsplit(":", 1)[1])
    with pytest.raises(BrokerError, match="already in use"):
        LocalBroker(tmp_path / "b", port).start()


def test_round_trip_and_seek_to_time(kafka_bootstrap: str, kafka_topic_factory) -> None:
    topic = kafka_topic_factory("rt", partitions=2)
    producer = make_producer({"bootstrap.servers": kafka_bootstrap})
    tracker = DeliveryTracker()
    # one message per GPS second, keyed so both partitions get data
    for i in range(10):
        gps = GPS0 + i
        producer.produce(
            topic,
            f"v{i}".encode(),
            key=f"k{i % 3}".encode(),
            timestamp=gps_to_kafka_ms(gps),
            on_delivery=tracker,
        )
    flush(producer, 30, tracker)
    assert len(tracker.delivered) == 10
    delivered = produce_sync(
        producer, topic, b"v10", b"k0", timestamp_ms=gps_to_kafka_ms(GPS0 + 10)
    )
    assert delivered.offset() >= 0

    consumer = make_consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"g-{uuid.uuid4().hex}",
            "enable.partition.eof": False,
        }
    )
    try:
        targets = seek_to_time(consumer, topic, GPS0 + 6.5)
        assert sorted(tp.partition for tp in targets) == [0, 1]
        msgs = poll_messages(consumer, 4, timeout=30)
        got = sorted(m.value() for m in msgs)
        assert got == [b"v10", b"v7", b"v8", b"v9"]
        for m in msgs:
            assert kafka_ms_to_gps(m.timestamp()[1]) >= GPS0 + 7
        # nothing earlier than the seek time comes afterwards
        assert poll_messages(consumer, 1, timeout=1) == []
    finally:
        consumer.close()


def test_subscribe_wait_for_assignment_loses_nothing(
    kafka_bootstrap: str, kafka_topic_factory
) -> None:
    topic = kafka_topic_factory("sub")
    producer = make_producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(3):
        produce_sync(producer, topic, f"m{i}".encode(), timestamp_ms=gps_to_kafka_ms(GPS0 + i))
    consumer = make_consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"g-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
        }
    )
    try:
        consumer.subscribe([topic])
        assigned = wait_for_assignment(consumer, timeout=30)
        assert [(tp.topic, tp.partition) for tp in assigned] == [(topic, 0)]
        msgs = poll_messages(consumer, 3, timeout=30)
        assert [m.value() for m in msgs] == [b"m0", b"m1", b"m2"]
        # seek within the group assignment
        seek_to_time(consumer, topic, GPS0 + 2)
        assert [m.value() for m in poll_messages(consumer, 1, timeout=30)] == [b"m2"]
        consumer.commit(offsets=[TopicPartition(topic, 0, 3)], asynchronous=False)
    finally:
        consumer.close()


def test_seek_to_missing_topic_fails(kafka_bootstrap: str) -> None:
    consumer = make_consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "g-missing"})
    try:
        with pytest.raises(BrokerError, match="not found"):
            seek_to_time(consumer, f"no.such.{uuid.uuid4().hex}", GPS0, timeout=5)
    finally:
        consumer.close()


def test_cluster_ids_never_look_like_options() -> None:
    from idq_dev.broker import random_cluster_id

    # 1/64 of raw ids start with '-'; 2000 draws miss that with probability ~1e-14
    ids = {random_cluster_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(len(c) == 22 and not c.startswith("-") for c in ids)


def test_auto_port_taken_before_bind_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An auto-chosen port grabbed by someone else before the JVM binds it: new ports."""
    import socket

    import idq_dev.broker as broker_mod

    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    real = broker_mod.free_port
    handed = iter([taken])
    monkeypatch.setattr(broker_mod, "free_port", lambda: next(handed, None) or real())
    broker = LocalBroker(tmp_path / "b")
    try:
        status = broker.start()
        assert status.ready and status.port != taken
        assert "Address already in use" in broker.log_file.read_text(errors="replace")
    finally:
        broker.stop()
        squatter.close()


def test_tied_broker_dies_with_its_parent(tmp_path: Path) -> None:
    """A test-session broker must not outlive a killed pytest (PR_SET_PDEATHSIG)."""
    import subprocess
    import sys

    from idq_dev.broker import _pid_alive

    code = (
        "import os, sys\n"
        "from idq_dev.broker import LocalBroker\n"
        "s = LocalBroker(sys.argv[1], tie_to_parent=True).start()\n"
        "print(s.pid, flush=True)\n"
        "os._exit(0)\n"  # no cleanup: as if killed
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "b")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    pid = int(out.stdout.strip())
    deadline = time.monotonic() + 30
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)  # waiting on a real external process
    assert not _pid_alive(pid)
