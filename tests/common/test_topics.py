"""Topic specs (pure) and creation on the real session broker."""

from __future__ import annotations

import uuid

import pytest

from idq_common.cli.main import main
from idq_common.exceptions import BrokerError
from idq_common.io.kafka.settings import KafkaSettings, TopicNames
from idq_common.io.kafka.topics import (
    TopicSpec,
    create_topics,
    describe_topic_config,
    settings_topic_specs,
    topic_specs,
)

KINDS = ["features", "segments", "quivers", "models", "calibrations", "timeseries", "deadletter"]


def test_topic_specs_defaults_and_policies() -> None:
    specs = topic_specs("H1", partitions=3, replication=1, retention_ms=3_600_000)
    assert [s.kind for s in specs] == KINDS
    assert [s.name for s in specs] == [f"idq.H1.{k}" for k in KINDS]
    by_kind = {s.kind: s for s in specs}
    for kind in ("models", "calibrations"):
        assert by_kind[kind].config == {"cleanup.policy": "compact"}
    for kind in ("features", "segments", "quivers", "timeseries", "deadletter"):
        assert by_kind[kind].config == {"cleanup.policy": "delete", "retention.ms": "3600000"}
    assert {s.partitions for s in specs} == {3}


def test_settings_topic_specs_follow_the_kafka_section() -> None:
    kafka = KafkaSettings(
        "127.0.0.1:9092",
        TopicNames.for_ifo("V1", features="v.features"),
        partitions=4,
        replication_factor=3,
        retention_hours=2.0,
    )
    specs = settings_topic_specs("V1", kafka)
    assert specs == topic_specs(
        "V1", kafka.topics.as_dict(), 4, 3, 7_200_000, kafka.retention_bytes
    )
    one = settings_topic_specs("V1", kafka, replication=1, retention_ms=-1)
    assert {s.replication for s in one} == {1} and one[0].name == "v.features"
    assert one[0].config["retention.ms"] == "-1"


def test_topic_specs_overrides_and_unknown_kind() -> None:
    specs = topic_specs("L1", names={"features": "custom.features"})
    assert specs[0].name == "custom.features" and specs[1].name == "idq.L1.segments"
    assert specs[0].config["retention.ms"] == "-1"  # never by (data) time by default
    with pytest.raises(ValueError, match="unknown"):
        topic_specs("L1", names={"bogus": "x"})


@pytest.mark.kafka
def test_create_twice_harmless_and_compaction(kafka_admin_config) -> None:
    ifo = f"T{uuid.uuid4().hex[:6]}"
    specs = topic_specs(ifo, partitions=2, retention_ms=7_200_000)
    first = create_topics(kafka_admin_config, specs)
    assert first == {s.name: True for s in specs}
    second = create_topics(kafka_admin_config, specs)
    assert second == {s.name: False for s in specs}
    models = describe_topic_config(kafka_admin_config, f"idq.{ifo}.models")
    calib = describe_topic_config(kafka_admin_config, f"idq.{ifo}.calibrations")
    feats = describe_topic_config(kafka_admin_config, f"idq.{ifo}.features")
    assert models["cleanup.policy"] == "compact"
    assert calib["cleanup.policy"] == "compact"
    assert feats["cleanup.policy"] == "delete"
    assert feats["retention.ms"] == "7200000"


@pytest.mark.kafka
def test_other_errors_raise(kafka_admin_config) -> None:
    bad = TopicSpec(f"bad.{uuid.uuid4().hex}", partitions=1, replication=3)
    with pytest.raises(BrokerError, match="creating topics failed"):
        create_topics(kafka_admin_config, [bad])


@pytest.mark.kafka
def test_cli_topics_create(kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]) -> None:
    ifo = f"C{uuid.uuid4().hex[:6]}"
    args = ["topics", "create", "--bootstrap", kafka_bootstrap, "--ifo", ifo]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.count("created") == 7 and f"idq.{ifo}.models" in out
    assert main(args) == 0
    assert capsys.readouterr().out.count("exists") == 7
    assert main(["topics", "list", "--bootstrap", kafka_bootstrap]) == 0
    assert f"idq.{ifo}.deadletter" in capsys.readouterr().out


def test_cli_topics_create_needs_ifo(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["topics", "create", "--bootstrap", "127.0.0.1:1"]) == 1
    assert "general.ifo" in capsys.readouterr().err


@pytest.mark.kafka
def test_cli_topics_create_from_config(kafka_admin_config, kafka_bootstrap: str) -> None:
    """Partitions and retention come from etc/idq-demo.toml; --ifo keeps the run isolated."""
    from pathlib import Path

    config = Path(__file__).resolve().parents[2] / "etc" / "idq-demo.toml"
    ifo = f"D{uuid.uuid4().hex[:6]}"
    args = ["topics", "create", "--config", str(config), "--bootstrap", kafka_bootstrap]
    assert main([*args, "--ifo", ifo]) == 0
    feats = describe_topic_config(kafka_admin_config, f"idq.{ifo}.features")
    assert feats["retention.ms"] == "-1"
    assert feats["retention.bytes"] == str(10 * 1024**3)
    from confluent_kafka.admin import AdminClient

    meta = AdminClient(kafka_admin_config).list_topics(timeout=10)
    assert len(meta.topics[f"idq.{ifo}.features"].partitions) == 2


def test_cli_topics_unreachable_broker_fails_fast(capsys: pytest.CaptureFixture[str]) -> None:
    from idq_dev.processes import free_port

    args = ["topics", "create", "--bootstrap", f"127.0.0.1:{free_port()}", "--ifo", "H1"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "no Kafka broker answers" in err and len(err.strip().splitlines()) == 1, err
