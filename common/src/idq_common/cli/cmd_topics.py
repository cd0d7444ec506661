"""``idq topics create|list``: the pipeline's seven topics of one instrument.

With ``--config FILE`` the names, partitions, replication and retention come from the
``[general]`` and ``[kafka]`` sections; ``--bootstrap``/``--ifo``/... override them or
stand alone. Without any bootstrap, the local broker of ``idq kafka up`` is used.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from idq_common.exceptions import BrokerError, ConfigError

NAME = "topics"
HELP = "create (idempotently) or list the pipeline topics of an instrument"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(NAME, help=HELP, description=HELP)
    sub = parser.add_subparsers(dest="topics_command", metavar="ACTION", required=True)
    create = sub.add_parser("create", help="create the seven topics (existing ones are kept)")
    listing = sub.add_parser("list", help="list the topics on the broker")
    for p in (create, listing):
        p.add_argument("--config", type=Path, default=None, help="iDQ TOML config")
        p.add_argument(
            "--bootstrap", default=None, help="host:port (default: config, else local broker)"
        )
    create.add_argument(
        "--ifo",
        default=None,
        help="instrument, e.g. H1, with default names idq.{ifo}.{kind} (default: config)",
    )
    create.add_argument("--partitions", type=int, default=None)
    create.add_argument("--replication", type=int, default=None)
    create.add_argument("--retention-hours", type=float, default=None)
    return parser


def _local_bootstrap() -> str:
    # The local development broker exists only where the development package is
    # installed (a checkout, never a service image); elsewhere a bootstrap is required.
    try:
        from idq_dev.broker import local_bootstrap
    except ImportError:
        bootstrap = None
    else:
        bootstrap = local_bootstrap()
    if bootstrap is None:
        raise BrokerError(
            "no --bootstrap, no --config, and no local broker running (try `idq kafka up`)"
        )
    return bootstrap


def _plan(ns: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(admin_config, topic_specs kwargs)`` from the config file and the flags."""
    admin: dict[str, Any] = {}
    spec: dict[str, Any] = {"ifo": None, "names": None, "partitions": 1, "replication": 1}
    spec["retention_ms"] = -1  # by size, never by data time (topics.py)
    if ns.config is not None:
        from idq_common.config import load_settings

        settings = load_settings(ns.config)
        kafka = settings.kafka
        admin = dict(kafka.admin_config())
        spec.update(
            ifo=settings.general.ifo,
            names=kafka.topics.as_dict(),
            partitions=kafka.partitions,
            replication=kafka.replication_factor,
            retention_ms=kafka.retention_ms,
            retention_bytes=kafka.retention_bytes,
        )
    if ns.bootstrap:
        admin["bootstrap.servers"] = ns.bootstrap
    elif "bootstrap.servers" not in admin:
        admin["bootstrap.servers"] = _local_bootstrap()
    if getattr(ns, "ifo", None):
        # another instrument: its default names idq.{ifo}.{kind}, not the config's
        spec["ifo"] = ns.ifo
        spec["names"] = None
    for flag, key in (("partitions", "partitions"), ("replication", "replication")):
        if getattr(ns, flag, None) is not None:
            spec[key] = getattr(ns, flag)
    if getattr(ns, "retention_hours", None) is not None:
        spec["retention_ms"] = round(ns.retention_hours * 3_600_000)
    return admin, spec


def run(ns: argparse.Namespace) -> int:
    from idq_common.io.kafka.topics import create_topics, topic_specs

    admin, spec = _plan(ns)
    if ns.topics_command == "create" and not spec["ifo"]:
        # a bad invocation is reported before any connection is tried
        raise ConfigError("general.ifo", "no instrument: give --ifo or --config")
    meta = _metadata(admin)
    if ns.topics_command == "list":
        for name in sorted(meta.topics):
            if not name.startswith("__"):
                print(f"{name}\t{len(meta.topics[name].partitions)} partition(s)")
        return 0
    specs = topic_specs(**spec)
    created = create_topics(admin, specs)
    for s in specs:
        if created.get(s.name):
            policy = s.config.get("cleanup.policy", "")
            print(f"created  {s.name}  partitions={s.partitions} {policy}")
        else:
            have = meta.topics.get(s.name)
            n = len(have.partitions) if have is not None else s.partitions
            print(f"exists   {s.name}  partitions={n} (left as it is)")
            if n < s.partitions:
                # Kafka only adds partitions (kafka-topics --alter); fewer than the config
                # asks for caps the replicas that can share the work
                print(
                    f"idq topics: warning: {s.name} has {n} partition(s), the config wants "
                    f"{s.partitions}: at most {n} replicas of a stage share it",
                    file=sys.stderr,
                )
    return 0


def _metadata(admin: dict[str, Any]) -> Any:
    """Cluster metadata, or one line (BrokerError) when no broker answers.

    librdkafka would otherwise log a FAIL line per retry until the timeout: its log
    goes to a silenced logger, and the wait is short.
    """
    import logging

    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    quiet = logging.getLogger("idq.topics.librdkafka")
    quiet.setLevel(logging.CRITICAL)
    quiet.propagate = False
    bootstrap = admin.get("bootstrap.servers")
    try:
        conf: dict[str, Any] = {**admin, "logger": quiet}
        return AdminClient(conf).list_topics(timeout=5)
    except KafkaException as exc:
        err = exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else exc
        raise BrokerError(f"no Kafka broker answers at {bootstrap} ({err})") from None
