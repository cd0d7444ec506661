"""Create the pipeline's topics (idempotently) with a confluent_kafka AdminClient.

Seven topics per instrument (DESIGN.md, "Topics"): ``features segments quivers models
calibrations timeseries deadletter``, default names ``idq.{ifo}.{kind}``. The model and
calibration announcement topics are compacted (the latest announcement per classifier
is all a reader needs); the others are deleted by *size* (``retention.bytes``), not by
time: message timestamps are the data's GPS time (readers seek by GPS with
``offsets_for_times``), and time-based deletion compares them with the wall clock, so a
replay of last year's data would be deleted as soon as it is written
(docs/ARCHITECTURE.md, "Retention").
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from idq_common.exceptions import BrokerError
from idq_common.io.kafka.settings import COMPACTED_KINDS, TOPIC_KINDS, KafkaSettings

log = logging.getLogger(__name__)
_QUIET = logging.getLogger(f"{__name__}.probe")
_QUIET.setLevel(logging.CRITICAL)
_QUIET.propagate = False


#: Topic configuration for data stamped with its own (GPS) time, e.g. a SNAX/sgnax JSON
#: topic that old data are replayed into: never deleted by (data) time.
NO_TIME_RETENTION: Mapping[str, str] = {"cleanup.policy": "delete", "retention.ms": "-1"}


@dataclass(frozen=True)
class TopicSpec:
    """One topic to create.

    Parameters
    ----------
    name : str
        Topic name.
    partitions : int
        Partition count (>= 1).
    replication : int
        Replication factor (>= 1).
    config : mapping
        Topic-level configuration, e.g. ``{"cleanup.policy": "compact"}``.
    kind : str, optional
        The pipeline kind this topic serves (``features`` ...), for messages.
    """

    name: str
    partitions: int = 1
    replication: int = 1
    config: Mapping[str, str] = field(default_factory=dict)
    kind: str | None = None

    def new_topic(self) -> NewTopic:
        """The confluent_kafka ``NewTopic`` request for this spec."""
        return NewTopic(
            self.name,
            num_partitions=self.partitions,
            replication_factor=self.replication,
            config=dict(self.config),
        )


def topic_specs(
    ifo: str,
    names: Mapping[str, str] | None = None,
    partitions: int = 1,
    replication: int = 1,
    retention_ms: int | None = -1,
    retention_bytes: int | None = None,
) -> list[TopicSpec]:
    """The seven topics of one instrument's pipeline, in pipeline order.

    Parameters
    ----------
    ifo : str
        Instrument prefix, e.g. ``"H1"``.
    names : mapping, optional
        ``{kind: name}`` overriding the default ``idq.{ifo}.{kind}`` (a ``TopicNames``'s
        ``as_dict()`` fits). Unknown kinds raise ``ValueError``.
    partitions, replication : int
        For every topic.
    retention_ms : int, optional
        ``retention.ms`` of the non-compacted topics; -1 (the default): no deletion by
        time (see the module); None keeps the broker default (168 h, by data time).
    retention_bytes : int, optional
        ``retention.bytes`` per partition of the non-compacted topics; None keeps the
        broker default (unlimited).
    """
    names = dict(names or {})
    unknown = set(names) - set(TOPIC_KINDS)
    if unknown:
        raise ValueError(f"unknown topic kind(s): {sorted(unknown)}")
    specs = []
    for kind in TOPIC_KINDS:
        config: dict[str, str]
        if kind in COMPACTED_KINDS:
            config = {"cleanup.policy": "compact"}
        else:
            config = {"cleanup.policy": "delete"}
            if retention_ms is not None:
                config["retention.ms"] = str(int(retention_ms))
            if retention_bytes is not None:
                config["retention.bytes"] = str(int(retention_bytes))
        specs.append(
            TopicSpec(
                name=names.get(kind, f"idq.{ifo}.{kind}"),
                partitions=partitions,
                replication=replication,
                config=config,
                kind=kind,
            )
        )
    return specs


def settings_topic_specs(ifo: str, kafka: KafkaSettings, **overrides: Any) -> list[TopicSpec]:
    """:func:`topic_specs` as ``[kafka]`` describes them (names, partitions, replication,
    retention); ``overrides`` replace any of those arguments (``replication=1`` on a
    one-broker test cluster, ``retention_ms=-1`` for replayed old data)."""
    args: dict[str, Any] = {
        "names": kafka.topics.as_dict(),
        "partitions": kafka.partitions,
        "replication": kafka.replication_factor,
        "retention_ms": kafka.retention_ms,
        "retention_bytes": kafka.retention_bytes,
    }
    return topic_specs(ifo, **{**args, **overrides})


def create_topics(
    admin_config: Mapping[str, Any], specs: Iterable[TopicSpec], timeout: float = 30.0
) -> dict[str, bool]:
    """Create ``specs``; existing topics are left as they are.

    Returns
    -------
    dict
        ``{name: True if created now, False if it already existed}``.

    Raises
    ------
    BrokerError
        Any failure other than ``TOPIC_ALREADY_EXISTS`` (all failures are listed).
    """
    specs = list(specs)
    if not specs:
        return {}
    bootstrap = str(admin_config.get("bootstrap.servers", ""))
    # Fail fast and quietly when nothing answers, instead of librdkafka's
    # connection-refused lines until the operation timeout.
    conf = dict(admin_config)
    probe_conf = {**conf, "logger": _QUIET}
    try:
        AdminClient(probe_conf).list_topics(timeout=min(timeout, 10.0))
    except KafkaException as exc:
        raise BrokerError(f"cannot reach Kafka at {bootstrap!r}: {exc}") from exc
    admin = AdminClient(conf)
    futures = admin.create_topics(
        [s.new_topic() for s in specs], operation_timeout=timeout, request_timeout=timeout
    )
    created: dict[str, bool] = {}
    errors: list[str] = []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
            created[name] = True
            log.info("created topic %s", name)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                created[name] = False
                log.debug("topic %s already exists", name)
            else:
                errors.append(f"{name}: {err}")
        except Exception as exc:  # a timed-out future raises concurrent.futures errors
            errors.append(f"{name}: {exc!r}")
    if errors:
        raise BrokerError("creating topics failed:\n  " + "\n  ".join(errors))
    return created


def describe_topic_config(
    admin_config: Mapping[str, Any], name: str, timeout: float = 30.0
) -> dict[str, str]:
    """The effective configuration of topic ``name`` as ``{key: value}``."""
    from confluent_kafka.admin import ConfigResource, ResourceType

    admin = AdminClient(dict(admin_config))
    resource = ConfigResource(ResourceType.TOPIC, name)
    try:
        entries = admin.describe_configs([resource])[resource].result(timeout=timeout)
    except KafkaException as exc:
        raise BrokerError(f"describing topic {name} failed: {exc}") from exc
    return {key: entry.value for key, entry in entries.items()}
