"""``idq kafka fetch|up|down|status``: the local single-node Kafka broker.

``up`` is idempotent (an already running broker of the data dir is reported, not
restarted); ``status`` exits 0 only when the broker answers an admin client.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

NAME = "kafka"
HELP = "local Apache Kafka broker (KRaft, 127.0.0.1): fetch jars, up, down, status"


def default_data_dir() -> Path:
    """``<kafka home>/data``: ``.cache/kafka/data`` in the repository by default."""
    from idq_dev.jars import kafka_home

    return kafka_home() / "data"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(NAME, help=HELP, description=HELP)
    sub = parser.add_subparsers(dest="kafka_command", metavar="ACTION", required=True)

    fetch = sub.add_parser("fetch", help="download the Kafka jars with Maven (idempotent)")
    fetch.add_argument("--force", action="store_true", help="re-fetch even if up to date")

    up = sub.add_parser("up", help="start the broker and wait until it is ready")
    up.add_argument("--port", type=int, default=None, help="client port (default: a free one)")
    up.add_argument("--timeout", type=float, default=90.0, help="seconds allowed to get ready")

    sub.add_parser("down", help="stop the broker (SIGTERM, then SIGKILL after --timeout)")
    sub.choices["down"].add_argument("--timeout", type=float, default=30.0)
    sub.add_parser("status", help="is it running and ready? (exit 0 only when ready)")

    for action in sub.choices.values():
        if action.prog.endswith("fetch"):
            continue
        action.add_argument(
            "--data-dir",
            type=Path,
            default=None,
            help="broker data dir (default: .cache/kafka/data, or $IDQ_KAFKA_HOME/data)",
        )
        action.add_argument("--json", action="store_true", help="print the status as JSON")
    return parser


def _print_status(status: object, as_json: bool, text: str) -> None:
    if as_json:
        print(json.dumps(asdict(status), indent=2))  # type: ignore[call-overload]
    else:
        print(text)


def _print_export(bootstrap: str | None, as_json: bool) -> None:
    """The line that points every ``idq`` command and service at this broker.

    The port is a free one, not etc/idq.toml's 9092: the environment override wins
    over the file (``IDQ_<SECTION>__<KEY>``).
    """
    if bootstrap and not as_json:
        print(f"export IDQ_KAFKA__BOOTSTRAP_SERVERS={bootstrap}")


def run(ns: argparse.Namespace) -> int:
    from idq_dev.broker import LocalBroker
    from idq_dev.jars import fetch_jars, jars_ready

    if ns.kafka_command == "fetch":
        fresh = ns.force or not jars_ready()
        libs = fetch_jars(force=ns.force)
        print(f"kafka jars {'fetched into' if fresh else 'already in'} {libs}")
        return 0

    data_dir = ns.data_dir or default_data_dir()
    if ns.kafka_command == "up":
        broker = LocalBroker(data_dir, ns.port, start_timeout=ns.timeout)
        before = broker.status(check_ready=False)
        if before.running:
            now = broker.status()
            _print_status(
                now,
                ns.json,
                f"kafka already up: bootstrap {now.bootstrap} (pid {now.pid}, "
                f"{'ready' if now.ready else 'NOT ready'}, data {now.data_dir})",
            )
            _print_export(now.bootstrap, ns.json)
            return 0 if now.ready else 1
        status = broker.start()
        _print_status(
            status,
            ns.json,
            f"kafka up: bootstrap {status.bootstrap} (pid {status.pid}, "
            f"started in {status.start_seconds:.1f} s, data {status.data_dir})",
        )
        _print_export(status.bootstrap, ns.json)
        return 0

    broker = LocalBroker(data_dir)
    if ns.kafka_command == "down":
        stopped = broker.stop(timeout=ns.timeout)
        print("kafka stopped" if stopped else f"kafka was not running (data {broker.data_dir})")
        return 0

    status = broker.status()
    if status.ready:
        text = f"kafka up: bootstrap {status.bootstrap} (pid {status.pid}, ready)"
    elif status.running:
        text = f"kafka running but NOT ready: bootstrap {status.bootstrap} (pid {status.pid})"
    else:
        text = f"kafka down (data {status.data_dir})"
    _print_status(status, ns.json, text)
    return 0 if status.ready else 1
