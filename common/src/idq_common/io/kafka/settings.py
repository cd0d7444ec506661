"""Kafka connection settings and topic names, turned into librdkafka dictionaries.

:class:`KafkaSettings` is a frozen value (in the style of quix-streams'
``ConnectionConfig``): what is needed to reach the cluster, how to create topics, and
the per-instrument topic names. It knows nothing about TOML; ``idq_common.config``
builds it from the ``[kafka]`` section after validation, and tests build it directly::

    settings = KafkaSettings(bootstrap_servers="127.0.0.1:9092", topics=TopicNames.for_ifo("H1"))
    producer = confluent_kafka.Producer(settings.producer_config())

Secrets (``sasl_password``) are masked as ``'***'`` in ``repr``/``str`` so that logging
the effective configuration never leaks them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

#: Topic kinds, in pipeline order; each instrument has one topic per kind.
TOPIC_KINDS: tuple[str, ...] = (
    "features",
    "segments",
    "quivers",
    "models",
    "calibrations",
    "timeseries",
    "deadletter",
)

#: Kinds whose topics are compacted: a reader only needs the latest announcement per key.
COMPACTED_KINDS: frozenset[str] = frozenset({"models", "calibrations"})

SECURITY_PROTOCOLS: tuple[str, ...] = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS: tuple[str, ...] = (
    "PLAIN",
    "SCRAM-SHA-256",
    "SCRAM-SHA-512",
    "GSSAPI",
    "OAUTHBEARER",
)

#: librdkafka keys that have their own field; passing them through ``[kafka.librdkafka]``
#: would bypass validation (and, for the password, masking).
MANAGED_LIBRDKAFKA_KEYS: frozenset[str] = frozenset(
    {
        "bootstrap.servers",
        "security.protocol",
        "sasl.mechanism",
        "sasl.mechanisms",
        "sasl.username",
        "sasl.password",
        "ssl.ca.location",
        "client.id",
        "group.id",
    }
)

#: Default ``retention.bytes`` per partition of the non-compacted topics (10 GiB).
DEFAULT_RETENTION_BYTES = 10 * 1024**3
#: how feature producers spread batches over the features topic's partitions
PARTITIONERS: tuple[str, ...] = ("round_robin", "key", "block")

MASK = "***"

_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")

LibrdkafkaValue = str | int | float | bool


def is_secret(f: dataclasses.Field[Any]) -> bool:
    """Whether a dataclass field is marked secret (``metadata={"secret": True}``)."""
    return bool(f.metadata.get("secret", False))


def masked_repr(obj: Any) -> str:
    """``repr`` of a dataclass instance with every secret field shown as ``'***'``."""
    parts = []
    for f in dataclasses.fields(obj):
        if not f.repr:
            continue
        value = getattr(obj, f.name)
        shown = repr(MASK) if (is_secret(f) and value is not None) else repr(value)
        parts.append(f"{f.name}={shown}")
    return f"{type(obj).__name__}({', '.join(parts)})"


def valid_topic_name(name: str) -> bool:
    """Kafka's own rule: 1-249 characters of ``[A-Za-z0-9._-]``, not ``.`` or ``..``."""
    return bool(_TOPIC_NAME.match(name)) and name not in (".", "..")


@dataclass(frozen=True, slots=True)
class TopicNames:
    """Names of the topics of one instrument's pipeline (defaults ``idq.{ifo}.{kind}``)."""

    features: str
    segments: str
    quivers: str
    models: str
    calibrations: str
    timeseries: str
    deadletter: str

    KINDS: ClassVar[tuple[str, ...]] = TOPIC_KINDS

    @classmethod
    def for_ifo(cls, ifo: str, **overrides: str) -> TopicNames:
        """Default names ``idq.{ifo}.{kind}``, with any kind overridden by keyword.

        Raises
        ------
        ValueError
            If an override names an unknown kind.
        """
        unknown = set(overrides) - set(TOPIC_KINDS)
        if unknown:
            raise ValueError(f"unknown topic kind(s): {sorted(unknown)}")
        names = {kind: overrides.get(kind, f"idq.{ifo}.{kind}") for kind in TOPIC_KINDS}
        return cls(**names)

    def as_dict(self) -> dict[str, str]:
        """``{kind: topic name}`` in pipeline order."""
        return {kind: getattr(self, kind) for kind in TOPIC_KINDS}

    def __getitem__(self, kind: str) -> str:
        if kind not in TOPIC_KINDS:
            raise KeyError(kind)
        return str(getattr(self, kind))


@dataclass(frozen=True, slots=True, repr=False)
class KafkaSettings:
    """How to reach Kafka, how to create topics, and which topics to use.

    Parameters
    ----------
    bootstrap_servers : str
        Comma-separated ``host:port`` list.
    topics : TopicNames
        Topic names of this instrument.
    security_protocol : str
        One of :data:`SECURITY_PROTOCOLS`.
    sasl_mechanism, sasl_username, sasl_password : str or None
        SASL credentials (required for the ``SASL_*`` protocols); the password is masked
        in ``repr``.
    ssl_ca_location : str or None
        CA bundle for ``SSL``/``SASL_SSL``.
    client_id : str
        ``client.id`` reported to the broker (the stage appends its name).
    partitions, replication_factor : int
        Used when topics are created.
    partitioner : {"round_robin", "key", "block"}
        How feature producers spread batches over the features topic's partitions:
        ``seq % P``, the hash of the source id, or by block of time (data second ``s``
        to ``floor(s / block_seconds) % P``, docs/SCALE_OUT.md). With ``"block"`` the
        shared stages (evaluate, timeseries) own strides by block and a replica reads
        only its own blocks plus the pad at their edges.
    block_seconds : float
        Block length of the ``"block"`` partitioner (a multiple of every shared stage's
        stride and of the producers' batch length).
    retention_hours : float or None
        Time-based retention of the non-compacted topics; None (the default): none.
        Message timestamps are the data's GPS time (so readers seek by GPS), and the
        broker deletes by comparing them with *now*: a replay of data older than this
        would be deleted within seconds of being written. Retention is by size instead.
    retention_bytes : int
        Size-based retention per partition of the non-compacted topics (default 10 GiB).
    librdkafka : mapping
        Extra librdkafka properties passed through to every client.
    librdkafka_producer, librdkafka_consumer, librdkafka_admin : mapping
        Extra properties for one kind of client only (``[kafka.librdkafka.producer]`` ...).
    """

    bootstrap_servers: str
    topics: TopicNames
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, metadata={"secret": True})
    ssl_ca_location: str | None = None
    client_id: str = "idq"
    partitions: int = 1
    replication_factor: int = 1
    partitioner: str = "round_robin"
    block_seconds: float = 16.0
    retention_hours: float | None = None
    retention_bytes: int = DEFAULT_RETENTION_BYTES
    librdkafka: Mapping[str, LibrdkafkaValue] = field(default_factory=dict)
    librdkafka_producer: Mapping[str, LibrdkafkaValue] = field(default_factory=dict)
    librdkafka_consumer: Mapping[str, LibrdkafkaValue] = field(default_factory=dict)
    librdkafka_admin: Mapping[str, LibrdkafkaValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Plain sanity checks so a directly built value cannot be nonsense; the config
        # loader has already reported these with the dotted key.
        if not self.bootstrap_servers:
            raise ValueError("bootstrap_servers must not be empty")
        if self.security_protocol not in SECURITY_PROTOCOLS:
            raise ValueError(f"security_protocol must be one of {SECURITY_PROTOCOLS}")
        if self.partitions < 1 or self.replication_factor < 1:
            raise ValueError("partitions and replication_factor must be >= 1")
        if self.partitioner not in PARTITIONERS:
            raise ValueError(f"partitioner must be one of {PARTITIONERS}")
        if not self.block_seconds > 0:
            raise ValueError("block_seconds must be > 0")

    __repr__ = masked_repr
    __str__ = masked_repr

    @classmethod
    def local(cls, bootstrap_servers: str, ifo: str = "H1", **kwargs: Any) -> KafkaSettings:
        """Settings for a local PLAINTEXT broker with the default topic names."""
        return cls(bootstrap_servers=bootstrap_servers, topics=TopicNames.for_ifo(ifo), **kwargs)

    @property
    def retention_ms(self) -> int:
        """``retention.ms`` for the non-compacted topics (-1: no time-based deletion)."""
        if self.retention_hours is None:
            return -1
        return round(self.retention_hours * 3600 * 1000)

    def topic_config(self, kind: str) -> dict[str, str]:
        """Topic-level configuration used when creating the topic of ``kind``."""
        if kind in COMPACTED_KINDS:
            # Announcements are keyed by classifier: the latest per key is all a reader needs.
            return {"cleanup.policy": "compact"}
        return {
            "cleanup.policy": "delete",
            "retention.ms": str(self.retention_ms),
            "retention.bytes": str(self.retention_bytes),
        }

    def common_config(self) -> dict[str, LibrdkafkaValue]:
        """Connection and security properties shared by every client."""
        conf: dict[str, LibrdkafkaValue] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
            "client.id": self.client_id,
        }
        if self.sasl_mechanism is not None:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username is not None:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            conf["sasl.password"] = self.sasl_password
        if self.ssl_ca_location is not None:
            conf["ssl.ca.location"] = self.ssl_ca_location
        conf.update(self.librdkafka)
        return conf

    def producer_config(self) -> dict[str, LibrdkafkaValue]:
        """Producer properties: durable (acks=all), idempotent, lightly batched."""
        conf = self.common_config()
        conf.update(
            {
                "acks": "all",
                "enable.idempotence": True,
                # A few ms of batching costs nothing at stride cadence and saves requests.
                "linger.ms": 5,
                # lz4 is compiled into every librdkafka build (zstd depends on the build).
                "compression.type": "lz4",
            }
        )
        # Operator-given extras win over our defaults: they know their cluster.
        conf.update({k: v for k, v in self.librdkafka.items() if k in conf})
        conf.update(self.librdkafka_producer)
        return conf

    def consumer_config(self, group_id: str) -> dict[str, LibrdkafkaValue]:
        """Consumer properties: manual commits after processing, start at the earliest.

        Offsets are stored and committed explicitly by the stage once a stride's output
        is published, so a crash re-processes instead of losing data.
        """
        if not group_id:
            raise ValueError("group_id must not be empty")
        conf = self.common_config()
        conf.update(
            {
                "group.id": group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
            }
        )
        conf.update({k: v for k, v in self.librdkafka.items() if k in conf})
        conf.update(self.librdkafka_consumer)
        return conf

    def admin_config(self) -> dict[str, LibrdkafkaValue]:
        """AdminClient properties."""
        conf = self.common_config()
        conf.update(self.librdkafka_admin)
        return conf
